"""Notifiers: turn a `Notification` into a Slack message, an e-mail or a console line."""
