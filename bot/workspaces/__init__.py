"""Tenancy: one workspace or many, installs, and each workspace's own settings.

Owns `Tenants` and `Workspace` (`tenants`), OAuth installs and uninstalls (`installs`),
the settings a workspace's admins may change (`settings`) and `/rlm config` with its form
(`config_command`, `config_form`, `config_modal`).

May import: `bot.runs` and every room below it, `bot.settings` and `rlm`. Never
operations, `bot.services` or the listeners above it (`Tenants` names what it needs of
the services as a protocol).
"""
