"""Small widgets and helpers shared by the pages: text-field parsers and number formatting.

The drawing canvas lives in ``app/components/canvas/`` (its own package).
"""
