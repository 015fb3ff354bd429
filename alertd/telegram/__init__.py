"""The community's Telegram bot: members keep their searches by talking to it.

| module | owns |
|---|---|
| ``pace.py`` | Telegram's limits, one pacer for replies and alerts alike |
| ``botapi.py`` | the Bot API's few calls over one ``httpx.Client``; its errors become ours |
| ``chat.py`` | the conversation: an update in, a change to the members table and replies out |
| ``poll.py`` | the long-poll loop, a thread of ``alertd run`` |
| ``send.py`` | a member's alert to their chat, with a button that stops its search |

The Bot API is called directly, not through python-telegram-bot: the daemon is
synchronous threads (PTB is asyncio and would need its own loop beside them), the
update offset must be stored in the same members write as the change the update caused
(PTB confirms updates itself, on its next poll, so a ``kill -9`` between the two would
act on a command twice or not at all), and one pacer must be shared by the cycle's
alerts and the bot's replies across threads. The calls are six: getMe, getUpdates,
sendMessage, editMessageText, answerCallbackQuery, getChatMember.
"""
