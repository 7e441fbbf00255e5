-- Least privilege (docs/database-roles.md): the service's login is a member of the group role
-- phiseal_<schema>_runtime, which reads and writes the service's rows and owns nothing; the
-- owner that runs these migrations keeps every DDL right. Tables a later migration creates
-- get the same grants through the default privileges. Creating the group role needs
-- CREATEROLE; the set-up (make run, the tests, an operator) normally creates it beforehand.
DO $$
DECLARE
    runtime text := 'phiseal_' || current_schema() || '_runtime';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = runtime) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', runtime);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime);
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
        current_schema(), runtime);
    EXECUTE format(
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
        current_schema(), runtime);
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I',
        current_schema(), runtime);
    -- The ledger is read (to refuse a schema with pending migrations), never written.
    EXECUTE format(
        'REVOKE INSERT, UPDATE, DELETE ON %I.schema_migrations FROM %I', current_schema(), runtime);
END
$$;
