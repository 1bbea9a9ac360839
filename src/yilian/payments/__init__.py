"""Card payments and settlement (一卡通 结算): the double-entry ledger, charges, reimbursement, daily clearing."""
