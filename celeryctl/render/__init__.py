"""Renderers: finished rows/reports -> table or JSON. They decide nothing and catch nothing."""
