"""Chinese first, English available: the portal's words in both languages."""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    "app": {"zh": "医联 区域卫生信息平台", "en": "Yilian regional health platform"},
    "sign_in": {"zh": "登录", "en": "Sign in"},
    "username": {"zh": "用户名", "en": "User name"},
    "password": {"zh": "密码", "en": "Password"},
    "otp": {"zh": "动态验证码（医护人员）", "en": "One-time code (staff)"},
    "sign_out": {"zh": "退出登录", "en": "Sign out"},
    "signed_in_as": {"zh": "已登录", "en": "Signed in as"},
    "authorize_intro": {
        "zh": "应用“{app}”请求访问您的数据：",
        "en": "The app “{app}” asks to use your data:",
    },
    # One message for every refused sign-in, a locked account included (see people.LoginRefused).
    "failed": {
        "zh": "用户名、密码或验证码错误（连续失败 {n} 次后账户将锁定 {minutes} 分钟）",
        "en": "Wrong user name, password or one-time code (after {n} failures in a row an account is locked for {minutes} minutes)",
    },
    "cannot_sign_in": {"zh": "无法登录", "en": "Cannot sign in"},
    # The detail under it is the protocol's own (RFC 6749 error code and description), for the
    # app's developer; the person is told what to do.
    "cannot_sign_in_help": {
        "zh": "打开此页面的应用链接有误，请返回该应用重试或联系其提供方。",
        "en": "The app that opened this page sent a link that is not valid: go back to the app and try again, or contact its provider.",
    },
    "form_expired": {
        "zh": "页面已过期，请刷新后重试。",
        "en": "The form has expired; reload the page and try again.",
    },
    "language": {"zh": "English", "en": "中文"},
    "institution": {"zh": "机构", "en": "Institution"},
    "operator": {"zh": "平台运营（卫健委）", "en": "Platform operator (health commission)"},
    "resident": {"zh": "居民", "en": "Resident"},
    "wallet": {"zh": "我的一卡通", "en": "My health card wallet"},
    "wallet_residents_only": {
        "zh": "此页面仅供居民本人查看自己（及子女）的一卡通余额。",
        "en": "This page shows residents their own (and their children's) card balance only.",
    },
    "available": {"zh": "可用余额", "en": "Available"},
    "balance": {"zh": "账户余额", "en": "Balance"},
    "held": {"zh": "预交金冻结", "en": "Held for deposits"},
    "when": {"zh": "时间", "en": "When"},
    "what": {"zh": "项目", "en": "What"},
    "amount": {"zh": "金额", "en": "Amount"},
    "after": {"zh": "余额", "en": "Balance after"},
    "no_movements": {"zh": "暂无交易记录", "en": "No movements yet"},
    "kind_top_up": {"zh": "充值", "en": "Top-up"},
    "kind_charge": {"zh": "诊间支付", "en": "Payment"},
    "kind_refund": {"zh": "退费", "en": "Refund"},
    "kind_hold": {"zh": "预交金结算", "en": "Deposit settled"},
    "back": {"zh": "返回", "en": "Back"},
    "bill": {"zh": "费用", "en": "Bill"},
    "insurer_paid": {"zh": "医保支付", "en": "insurance paid"},
    "aid_paid": {"zh": "医疗救助", "en": "medical aid paid"},
}


def language(accept_language: str | None, cookie: str | None) -> str:
    if cookie in ("zh", "en"):
        return cookie
    if accept_language and accept_language.lower().startswith("en"):
        return "en"
    return "zh"


def translator(lang: str):  # type: ignore[no-untyped-def]
    def t(key: str, **kw: str) -> str:
        text = MESSAGES.get(key, {}).get(lang) or MESSAGES.get(key, {}).get("zh") or key
        return text.format(**kw) if kw else text

    return t
