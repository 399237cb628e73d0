variable "ca_principal_arns" {
  description = "ARNs of the IAM roles/users keybridge-ca runs as (its own account's credentials); only they may assume this role."
  type        = list(string)
  validation {
    condition     = length(var.ca_principal_arns) > 0 && alltrue([for a in var.ca_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", a))])
    error_message = "ca_principal_arns: at least one IAM role or user ARN."
  }
}

variable "external_id" {
  description = "sts:ExternalId keybridge-ca must present ([aws] external_id). Not a secret; it stops a confused deputy. Null: not required."
  type        = string
  default     = null
  validation {
    condition     = var.external_id == null ? true : (length(var.external_id) >= 2 && length(var.external_id) <= 1224 && can(regex("^[A-Za-z0-9+=,.@:/-]+$", var.external_id)))
    error_message = "external_id: 2-1224 characters of A-Z a-z 0-9 + = , . @ : / -."
  }
}

variable "trust_domain" {
  description = "keybridge-ca's trust domain (the keybridge:trust-domain tag it puts on every secret it creates)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9._-]{1,255}$", var.trust_domain))
    error_message = "trust_domain: lowercase a-z 0-9 . _ -."
  }
}

variable "secret_prefix" {
  description = "Name prefix of the SVID secrets the CA may write in this account (registrations use secretsmanager:ACCOUNT:<prefix>...)."
  type        = string
  default     = "keybridge/svid/"
  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]{1,256}$", var.secret_prefix)) && endswith(var.secret_prefix, "/")
    error_message = "secret_prefix: characters of a secret name, ending in '/'."
  }
}

variable "role_name" {
  description = "Name of the role (keybridge-ca's [aws] role_arn template names it: arn:aws:iam::{account}:role/<role_name>)."
  type        = string
  default     = "keybridge-ca-svid-store"
}

variable "max_session_duration" {
  description = "Seconds an assumed session may last (keybridge-ca asks for 1 hour and refreshes before expiry)."
  type        = number
  default     = 3600
  validation {
    condition     = var.max_session_duration >= 3600 && var.max_session_duration <= 43200
    error_message = "max_session_duration: 3600-43200."
  }
}

variable "permissions_boundary" {
  type    = string
  default = null
}

variable "tags" {
  type    = map(string)
  default = {}
}
