"""Keras layers and models of the CTR system (paper section 3)."""
