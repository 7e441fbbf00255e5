-- keysvc's own tables arrive with the keysvc issue; the outbox comes from services/common.
SELECT 1;
