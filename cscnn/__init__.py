"""CSCNN: visual-aware CTR prediction (Category-Specific CNN + DCN) as a TFX pipeline."""
