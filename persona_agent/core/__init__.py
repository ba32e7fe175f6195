"""The bottom layer: errors, settings, usage accounting, label sets and the LaMP/OPPU data formats.

Everything else may import from here; nothing here imports any other part of PersonaAgent.
"""
