"""YouTube live chat: the web client's route (no API key) or the Data API v3 (a key and its quota).

One source type, ``youtube``; ``channel`` names what to follow: a handle (``@name``), a channel
id (``UC...``), a live video id or a watch URL. The source finds the live broadcast (waiting in
the state ``not_live`` while there is none, and picking the stream up when it starts), reads
its chat and follows the channel's next stream when this one ends.

* **web** (default): the watch page's initial data and ``ytcfg`` (InnerTube API key and client
  context), the live_chat page's first batch, then ``youtubei/v1/live_chat/get_live_chat``
  continuations at the ``timeoutMs`` the server asks for.
* **Data API v3**: set ``api_key_file`` or ``api_key_env``; ``liveChatMessages.list`` at its
  ``pollingIntervalMillis``, each poll costing 5 quota units.

Chat becomes ``Kind.DANMAKU``; Super Chats and Super Stickers ``Kind.SUPERCHAT`` with the amount
and currency (paid class, journaled); new members, milestones and membership gifts ``Kind.SUB``;
moderator deletions and bans become Deletions that take queued or speaking speech back. Every
base URL is overridable (``base_url``, ``api_base``) for tests and mirrors. docs/youtube.md has
the wire facts.

The package's files are named for their jobs: ``target.py`` (what ``channel`` names),
``page.py`` (the pages' embedded JSON), ``actions.py`` (chat actions to Messages),
``money.py`` (purchase amounts), ``fetch.py`` (bounded HTTP), ``innertube.py`` (the web
route), ``dataapi.py`` (the Data API route), ``settings.py`` (the ``[[sources]]`` table) and
``source.py`` (discovery, polling, delivery).
"""

from __future__ import annotations

from ishowttsd.hookspecs import hookimpl

from .source import YouTubeSource


@hookimpl
def ishowtts_register_sources(register):
    register(YouTubeSource)
