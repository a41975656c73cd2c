"""Loaders: read a supplier's drop, validate it, harmonise it, and load it through the one shared pipeline.

``pipeline`` holds the steps every supplier shares; each supplier format is one module (``police_uk``)
registered in ``registry``; ``boundaries`` loads the areas; ``demo`` writes realistic demo drops.
"""
