"""The service layer and the database: transitions, rules, races, ledger, reports' data, provisioning."""
