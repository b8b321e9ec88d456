"""Errors with the status codes TF Serving uses."""


class ServingError(Exception):
  grpc_code = "INTERNAL"
  http_status = 500


class Internal(ServingError):
  """A failure that is not the request's fault."""


class NotFound(ServingError):
  grpc_code = "NOT_FOUND"
  http_status = 404


class InvalidArgument(ServingError):
  grpc_code = "INVALID_ARGUMENT"
  http_status = 400


class Unavailable(ServingError):
  grpc_code = "UNAVAILABLE"
  http_status = 503


class ResourceExhausted(ServingError):
  grpc_code = "RESOURCE_EXHAUSTED"
  http_status = 413


class DeadlineExceeded(ServingError):
  grpc_code = "DEADLINE_EXCEEDED"
  http_status = 504


class Unimplemented(ServingError):
  grpc_code = "UNIMPLEMENTED"
  http_status = 501
