"""Helpers the test tiers share: real components started on free loopback ports."""
