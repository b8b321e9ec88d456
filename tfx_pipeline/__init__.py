"""The TFX pipeline: features, configs, preprocessing, trainer, pipeline definition, runners."""
