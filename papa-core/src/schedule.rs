//! Schedules: when to apply a rule, and the effective PAPA coefficient under lr scaling.
