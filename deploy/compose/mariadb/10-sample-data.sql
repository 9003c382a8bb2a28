-- Sample data for the local MariaDB: the menus data set of the embedded sample database
-- (src/exportd/sampledb.py). Runs once, when the mariadb container initialises its volume,
-- in the database named by MARIADB_DATABASE (the image grants MARIADB_USER all rights on it).

CREATE TABLE muscles (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL);
INSERT INTO muscles VALUES (1, 'muscle1'), (2, 'muscle2'), (3, 'muscle3');
CREATE TABLE menus (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, category VARCHAR(32) NOT NULL);
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
CREATE TABLE muscle_menus (menu_id INTEGER NOT NULL, muscle_id INTEGER NOT NULL);
INSERT INTO muscle_menus VALUES
    (1, 1), (2, 1), (2, 2), (3, 2), (4, 3),
    (5, 1), (5, 2), (6, 3),
    (7, 2), (8, 3);
