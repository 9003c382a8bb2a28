-- Design question Q2: for each menu category, how many menus train muscle1 or muscle2?
-- A menu that trains both muscles counts once. Portable SQL: runs unchanged on PostgreSQL and
-- DuckDB (tests/integration/test_docs_q2.py runs it on both and expects
-- training 3, balance 1, stretch 1 on the sample data set).
--
-- Why EXISTS and not a plain join: joining menus to muscle_menus yields one row per
-- (menu, muscle) pair, so a menu training both muscles would be counted twice
-- (training 4, balance 2). The semi-join asks "does at least one such pair exist?" and keeps
-- each menu once, without the cost of a DISTINCT over the joined rows.
SELECT m.category, COUNT(*) AS menu_count
FROM menus AS m
WHERE EXISTS (
    SELECT 1
    FROM muscle_menus AS mm
    JOIN muscles AS mu ON mu.id = mm.muscle_id
    WHERE mm.menu_id = m.id
      AND mu.name IN ('muscle1', 'muscle2')
)
GROUP BY m.category
ORDER BY menu_count DESC, m.category;
