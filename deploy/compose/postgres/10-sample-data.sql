-- Sample data for the local PostgreSQL, the same rows as the embedded DuckDB sample database
-- (src/exportd/sampledb.py), so an export gives the same file from either source.
-- Runs once, when the postgres container initialises an empty data volume.

CREATE TABLE users AS
SELECT
    id,
    (ARRAY['Ada', 'Bob', 'Chloé', 'Dmitri', 'Emma', 'Farid', 'Grace', 'Hiro', 'Ines', 'Jonas',
           'Kofi', 'Lena', 'Mateo', 'Nora', 'Omar', 'Priya', 'Quinn', 'Rosa', 'Sven', 'Yuki'])
        [1 + id % 20] || ' ' ||
    (ARRAY['Smith', 'Müller', 'García', 'Rossi', 'Kim', 'Nowak', 'Silva', 'Dubois', 'Sato',
           'Jensen', 'Okafor', 'Novak', 'Larsen'])
        [1 + (id * 7) % 13] AS name,
    'user' || id || '@example.com' AS email,
    (1 + id % 5)::integer AS tier,
    ((ARRAY['US', 'DE', 'FR', 'GB', 'JP', 'BR', 'IN', 'NL', 'ES', 'CA'])
        [1 + (id * 3) % 10])::char(2) AS country,
    DATE '2015-01-01' + ((id * 37) % 3650)::integer AS signup_date,
    CASE WHEN id % 17 = 0 THEN NULL
         ELSE TIMESTAMPTZ '2024-01-01 00:00:00+00' + make_interval(secs => (id * 7919) % 31536000)
    END AS last_login,
    (((id * 7919) % 1000000) / 100.0 - 2000)::numeric(12, 2) AS balance,
    id % 7 <> 0 AS active,
    CASE
        WHEN id % 10 IN (0, 3, 6) THEN NULL
        WHEN id % 1000 = 1 THEN '=HYPERLINK("http://x","y")'
        WHEN id % 1000 = 2 THEN '   leading spaces'
        WHEN id % 1000 = 4 THEN 'Grüße, 日本語, emoji 😀'
        WHEN id % 1000 = 5 THEN '+1+2'
        WHEN id % 1000 = 7 THEN '-2+3'
        WHEN id % 1000 = 8 THEN '@SUM(A1:A2)'
        WHEN id % 1000 = 9 THEN ''
        ELSE 'note ' || id
    END AS notes
FROM generate_series(1::bigint, 100000::bigint) AS id;
ALTER TABLE users ADD PRIMARY KEY (id);

CREATE TABLE muscles (id integer PRIMARY KEY, name varchar NOT NULL);
INSERT INTO muscles VALUES (1, 'muscle1'), (2, 'muscle2'), (3, 'muscle3');
CREATE TABLE menus (id integer PRIMARY KEY, name varchar NOT NULL, category varchar NOT NULL);
INSERT INTO menus VALUES
    (1, 'Squat', 'training'),
    (2, 'Deadlift', 'training'),
    (3, 'Lunge', 'training'),
    (4, 'Bench press', 'training'),
    (5, 'Plank', 'balance'),
    (6, 'Single-leg stand', 'balance'),
    (7, 'Hamstring stretch', 'stretch'),
    (8, 'Shoulder stretch', 'stretch'),
    (9, 'Breathing', 'balance');
CREATE TABLE muscle_menus (menu_id integer NOT NULL, muscle_id integer NOT NULL);
INSERT INTO muscle_menus VALUES
    (1, 1), (2, 1), (2, 2), (3, 2), (4, 3),
    (5, 1), (5, 2), (6, 3),
    (7, 2), (8, 3);

