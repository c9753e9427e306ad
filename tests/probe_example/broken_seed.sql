-- a seed file with a typo, for the probe's bad-input tests
CREATE TABEL products (id int);
