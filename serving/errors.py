"""Errors with the status codes TF Serving uses."""


class ServingError(Exception):
  grpc_code = "INTERNAL"
  http_status = 500


class NotFound(ServingError):
  grpc_code = "NOT_FOUND"
  http_status = 404


class InvalidArgument(ServingError):
  grpc_code = "INVALID_ARGUMENT"
  http_status = 400


class Unavailable(ServingError):
  grpc_code = "UNAVAILABLE"
  http_status = 503


class Unimplemented(ServingError):
  grpc_code = "UNIMPLEMENTED"
  http_status = 501
