"""The long-running daemon: scheduler, lifecycle, health endpoint, metrics, systemd."""
