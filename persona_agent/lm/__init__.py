"""LMs: `models.make_lm` from a setting (a hosted or served model, or the offline in-process default), the
llama.cpp engine, runtime and model file behind the default.

Import the modules (`persona_agent.lm.models`): this package imports nothing, so loading the engine never
loads DSPy's LM set-up and the other way round.
"""
