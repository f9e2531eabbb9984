"""Wired M-Bus (EN 13757) heat and water meters polled through an M-Bus gateway."""
