-- credit_ledger_account (account_id) is a prefix of credit_ledger_account_id (account_id, id DESC),
-- added for the dashboard in 0011: every debit and refund maintained both (issue 17, PostgreSQL's
-- CPU per message). Lookups by account use the longer one.

DROP INDEX IF EXISTS credit_ledger_account;
