"""The operator page: a read-only live view of the line served by the service (`service.ui_listen`).

`snapshot` turns the service's observer hooks into the page's JSON; `app` serves it (aiohttp, server-sent
events); `static/` holds the page itself (plain HTML, CSS and JavaScript: no CDN, no build step).
"""
