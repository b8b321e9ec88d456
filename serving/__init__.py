"""A model server speaking TF Serving's protocol (gRPC PredictionService / ModelService and the
REST API) over the pipeline's pushed SavedModels, and a client for it."""
