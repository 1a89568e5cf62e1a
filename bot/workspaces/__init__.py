"""Tenancy: one workspace or many, installs, and each workspace's own settings.

Owns `Tenants` and `Workspace` (`tenants`), OAuth installs and uninstalls (`installs`),
the settings a workspace's admins may change (`settings`) and `/rlm config` with its form
(`config_command`, `config_modal`).

May import: `bot.runs` and every room below it, `bot.settings` and `rlm`. Never the
listeners or operations above it.
"""
