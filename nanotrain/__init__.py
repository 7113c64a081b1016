"""nanotrain: the whole LLM training pipeline in small, readable, plain-PyTorch modules.

See README.md for the quickstart and ../DESIGN notes for how the stages fit together.
"""
