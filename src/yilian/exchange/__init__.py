"""The exchange platform (数据交换平台): HL7 v2 over MLLP, legacy CSV migration, bulk data, subscriptions, forwarding."""
