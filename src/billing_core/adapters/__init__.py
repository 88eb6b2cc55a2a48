"""Adapters: the only place that talks to AWS services and payment providers."""
