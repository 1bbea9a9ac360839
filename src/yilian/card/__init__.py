"""The resident health card (居民健康卡): issue, activate, report lost, replace, suspend, revoke, resolve."""
