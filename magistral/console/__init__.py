"""The console: people sign up, manage their accounts' keys, budgets and members, and explore
usage in the browser; operators activate, suspend and re-tier accounts (audited)."""
