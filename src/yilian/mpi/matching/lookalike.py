"""Characters that are mistaken for one another when a form is read or typed by shape.

Input-method slips produce homophones, which the pinyin comparison already catches; this
table is for the other kind: a clerk copying a handwritten form or an OCR'd card reads 王 as
玉 or 未 as 末. Small on purpose — every pair here makes two different names look alike.
"""

from __future__ import annotations

import functools

_GROUPS = (
    "王玉主",
    "未末",
    "己已巳",
    "土士",
    "日曰",
    "人入八",
    "大太犬",
    "刀力",
    "贝见",
    "天夭",
    "戊戌戍",
    "候侯",
    "晴睛",
    "折拆",
    "洒酒",
    "汩汨",
    "崇祟",
    "冶治",
    "辨辩辫",
    "徽微",
    "凤风",
    "鸟乌",
    "兔免",
    "毫亳",
    "拔拨",
    "今令",
    "仑仓",
    "历厉",
    "秀季",
    "田由甲申",
    "千干于",
    "午牛",
    "白自百",
    "东车",
    "木本术",
    "史吏",
    "壁璧",
    "峰锋",
    "梁粱",
    "輝辉",
    "瑜愉",
    "娟涓",
    "琳淋",
    "丽麗",
    "华華",
    "国國",
    "杰傑",
    "伟偉",
    "军軍",
    "刚剛",
    "云雲",
    "龙龍",
)


@functools.cache
def _pairs() -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for group in _GROUPS:
        for a in group:
            for b in group:
                if a != b:
                    out.add((a, b))
    return frozenset(out)


def look_alike(a: str, b: str) -> bool:
    """``True`` if two different characters are commonly confused by shape (or are the
    traditional and simplified forms of one character, which old registers mix)."""
    return (a, b) in _pairs()
