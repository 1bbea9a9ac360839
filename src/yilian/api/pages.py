"""The front page: what is running and where its APIs and docs are (Chinese first, English beside)."""

from __future__ import annotations

import html
from typing import Any

from yilian import __version__
from yilian.db import Database


def front_page(db: Database, base: str, extra: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in extra.items())
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>医联 Yilian — 区域卫生信息平台</title>
<style>
body{{font-family:system-ui,-apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:0;color:#1d2733;background:#f5f7fa}}
header{{background:#0b6e4f;color:#fff;padding:1.2rem 1rem}} header h1{{margin:0;font-size:1.4rem}}
main{{max-width:52rem;margin:0 auto;padding:1rem}} section{{background:#fff;border-radius:8px;padding:1rem;margin:0 0 1rem;box-shadow:0 1px 2px #0001}}
th{{text-align:left;padding-right:1rem;font-weight:600}} a{{color:#0b6e4f}} .en{{color:#5b6b7a;font-size:.9em}}
code{{background:#eef2f5;padding:0 .3em;border-radius:3px}}
</style></head>
<body><header><h1>医联 Yilian <span class="en">regional health information platform</span></h1>
<div>区域卫生信息平台 · 版本 {esc(__version__)}</div></header>
<main>
<section><h2>运行状态 <span class="en">Status</span></h2>
<table><tr><th>数据库 <span class="en">database</span></th><td>{esc(db.dialect)}</td></tr>{rows}</table>
</section>
<section><h2>接口 <span class="en">APIs</span></h2>
<ul>
<li><a href="{esc(base)}/fhir/metadata">FHIR R4 能力声明 <span class="en">CapabilityStatement</span></a> — <code>{esc(base)}/fhir</code></li>
<li><a href="{esc(base)}/fhir/Patient?_count=20">居民 <span class="en">Patients</span></a> ·
<a href="{esc(base)}/fhir/Organization?_count=50">医疗机构 <span class="en">Organizations</span></a> ·
<a href="{esc(base)}/fhir/Observation?_count=20&amp;_sort=-date">观察 <span class="en">Observations</span></a></li>
<li><a href="{esc(base)}/health/ready">健康检查 <span class="en">health check</span></a></li>
</ul>
<p>接口文档见仓库 <code>docs/api.md</code> <span class="en">— API guide in docs/api.md</span></p>
</section>
</main></body></html>"""
