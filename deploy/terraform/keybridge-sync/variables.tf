variable "app" {
  description = "Application name as keybridged knows it (the syncer's SPIFFE ID maps to it). Drives the schedule offset, the secret prefix keybridge/<app>/ and the IAM policy."
  type        = string
  validation {
    # keybridge's name rule (src/sync/run.c sync_name_ok) and KB_APP_NAME_MAX (src/lib/names.h)
    condition     = can(regex("^[A-Za-z0-9_+=@-][A-Za-z0-9_.+=@-]{0,245}$", var.app))
    error_message = "app: 1-246 characters of A-Z a-z 0-9 _ . + = @ -, not starting with '.'."
  }
}

variable "artifact_bucket" {
  description = "S3 bucket (versioning enabled) holding keybridge-sync-lambda-<arch>.zip."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket))
    error_message = "artifact_bucket: an S3 bucket name."
  }
}

variable "artifact_key" {
  description = "S3 key of the zip, e.g. keybridge-sync/1.2.0/keybridge-sync-lambda-x86_64.zip."
  type        = string
  validation {
    condition     = length(var.artifact_key) > 0 && length(var.artifact_key) <= 1024
    error_message = "artifact_key: 1-1024 characters."
  }
}

variable "artifact_object_version" {
  description = "S3 object version ID of the zip (required: the artifact is pinned, a new upload under the same key changes nothing until this changes)."
  type        = string
  validation {
    condition     = length(trimspace(var.artifact_object_version)) > 0 && var.artifact_object_version != "null"
    error_message = "artifact_object_version: required; the function is pinned to one S3 object version."
  }
}

variable "artifact_sha256" {
  description = "SHA-256 of the zip, 64 hex digits (the .sha256 file scripts/package-lambda.sh writes). Becomes source_code_hash; after apply the module checks Lambda's CodeSha256 against it."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{64}$", var.artifact_sha256))
    error_message = "artifact_sha256: 64 hex digits."
  }
}

variable "architecture" {
  description = "x86_64 or arm64: must match the zip (keybridge-sync-lambda-<architecture>.zip)."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture: x86_64 or arm64."
  }
}

variable "keybridged_url" {
  description = "keybridged's base URL, https://host:port (reachable from the function: see vpc_subnet_ids)."
  type        = string
  validation {
    condition     = can(regex("^https://[^/?#@\\s]+(:[0-9]{1,5})?/?$", var.keybridged_url))
    error_message = "keybridged_url: https://host[:port] (https only)."
  }
}

variable "server_id" {
  description = "keybridged's SPIFFE ID, pinned: any other server identity is refused."
  type        = string
  validation {
    condition     = can(regex("^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+$", var.server_id))
    error_message = "server_id: a SPIFFE ID with a path, e.g. spiffe://example.org/keybridged."
  }
}

variable "svid_secret_name" {
  description = "Name of the Secrets Manager secret keybridge-ca keeps this syncer's SVID in (SPIRE SVIDStore JSON), e.g. keybridge/svid/<app>."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]{1,512}$", var.svid_secret_name))
    error_message = "svid_secret_name: 1-512 characters of A-Z a-z 0-9 / _ + = . @ -."
  }
}

variable "regions" {
  description = "Regions the syncer writes (one fetch, every region). Empty: the function's own region. The SVID secret is read from the first."
  type        = list(string)
  default     = []
  validation {
    condition     = length(var.regions) <= 16 && alltrue([for r in var.regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", r))])
    error_message = "regions: at most 16 region names such as eu-west-1."
  }
}

variable "sink_endpoint" {
  description = "Optional Secrets Manager endpoint override (one URL, a {region} template, or one per region, comma-separated). Null: AWS's regional endpoint (through a VPC interface endpoint if the subnets have one)."
  type        = string
  default     = null
}

variable "interval" {
  description = "Minutes between runs; divides 60."
  type        = number
  default     = 15
  validation {
    condition     = var.interval >= 1 && var.interval <= 60 && floor(var.interval) == var.interval && 60 % var.interval == 0
    error_message = "interval: a whole number of minutes that divides 60."
  }
}

variable "memory_size" {
  description = "MB. 128 (Lambda's minimum) is ~20x what a cold run uses: bench/lambda measured 6.4 MiB peak RSS and 16.7 ms init (median) for the artifact. A run waits on the network (keybridged, Secrets Manager), so the small CPU share of 128 MB costs little."
  type        = number
  default     = 128
  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size: 128-10240 MB."
  }
}

variable "timeout" {
  description = "Seconds. Null: 300, or less when the interval is shorter (interval*60 - 10), so a run always ends before the next is due. A no-op run takes well under a second; a large first sync is paced, stops at the deadline and continues on the next run."
  type        = number
  default     = null
  validation {
    condition     = var.timeout == null ? true : (var.timeout >= 10 && var.timeout <= 900 && var.timeout < var.interval * 60)
    error_message = "timeout: 10-900 seconds and shorter than the interval."
  }
}

variable "delete_policy" {
  description = "delete (7-day recovery window) or retain."
  type        = string
  default     = "delete"
  validation {
    condition     = contains(["delete", "retain"], var.delete_policy)
    error_message = "delete_policy: delete or retain."
  }
}

variable "max_delete_fraction" {
  description = "Largest share of managed secrets one run may delete (0..1). Null: the syncer's default (0.10)."
  type        = number
  default     = null
  validation {
    condition     = var.max_delete_fraction == null ? true : (var.max_delete_fraction >= 0 && var.max_delete_fraction <= 1)
    error_message = "max_delete_fraction: 0..1."
  }
}

variable "write_rate" {
  description = "Most Secrets Manager writes per second per region ([sink] rate). Null: the syncer's default (20/s; AWS allows 50/s per account and region, shared by everything in it)."
  type        = number
  default     = null
  validation {
    condition     = var.write_rate == null ? true : (var.write_rate >= 0 && var.write_rate <= 1000 && floor(var.write_rate) == var.write_rate)
    error_message = "write_rate: a whole number 0-1000 (0: unpaced)."
  }
}

variable "log_level" {
  description = "debug, info, warn or error."
  type        = string
  default     = "info"
  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level: debug, info, warn or error."
  }
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the function's log group."
  type        = number
  default     = 30
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch Logs' retention values (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "vpc_subnet_ids" {
  description = "Subnets to run in when keybridged is reached through the data center link (Direct Connect / VPN). Empty: no VPC. The subnets need a route to keybridged and to Secrets Manager (VPC interface endpoint or NAT)."
  type        = list(string)
  default     = []
}

variable "vpc_security_group_ids" {
  description = "Security groups for the function's network interfaces (required with vpc_subnet_ids): egress to keybridged's port and 443 to Secrets Manager."
  type        = list(string)
  default     = []
  validation {
    condition     = length(var.vpc_subnet_ids) == 0 || length(var.vpc_security_group_ids) > 0
    error_message = "vpc_security_group_ids: required when vpc_subnet_ids is set."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified when a run fails."
  type        = list(string)
  default     = []
}

variable "function_name" {
  description = "Override the function (and role, rule) name. Default: keybridge-sync-<app>, shortened with a hash when app is long or has characters Lambda names do not allow."
  type        = string
  default     = null
  validation {
    condition     = var.function_name == null ? true : can(regex("^[A-Za-z0-9_-]{1,56}$", var.function_name))
    error_message = "function_name: 1-56 characters of A-Z a-z 0-9 _ -."
  }
}

variable "permissions_boundary" {
  description = "Optional permissions boundary ARN for the function's role."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource the module creates."
  type        = map(string)
  default     = {}
}
