-- auditsvc's tables arrive with the auditsvc issue.
SELECT 1;
