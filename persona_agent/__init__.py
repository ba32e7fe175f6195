"""PersonaAgent."""
