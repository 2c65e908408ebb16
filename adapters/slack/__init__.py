"""keyturn's Slack surface: Block Kit cards, Bolt handlers, ``/breakglass``, the feed.

``mount_slack(web_app, service, settings=SlackSettings(...))`` adds ``POST /slack/events``
to keyturn's one aiohttp application.
"""

from adapters.slack.app import SlackIdentities, build_slack_app
from adapters.slack.blocks import card_blocks, fallback_text
from adapters.slack.commands import USAGE, parse_breakglass
from adapters.slack.delivery import SlackPublisher, SlackSender
from adapters.slack.mount import EVENTS_PATH, SlackSurface, mount_slack
from adapters.slack.settings import SlackSettings

__all__ = [
    "EVENTS_PATH",
    "USAGE",
    "SlackIdentities",
    "SlackPublisher",
    "SlackSender",
    "SlackSettings",
    "SlackSurface",
    "build_slack_app",
    "card_blocks",
    "fallback_text",
    "mount_slack",
    "parse_breakglass",
]
