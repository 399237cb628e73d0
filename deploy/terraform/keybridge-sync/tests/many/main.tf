# Test helper (tests/schedule.tftest.hcl): the module once per application name, to compare
# schedule_expression with `keybridge-sync schedule` for many names in one plan.
terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "apps" {
  type = list(string)
}

variable "interval" {
  type    = number
  default = 15
}

module "sync" {
  source   = "../.."
  for_each = toset(var.apps)

  app                     = each.value
  interval                = var.interval
  artifact_bucket         = "artifacts"
  artifact_key            = "keybridge-sync-lambda-x86_64.zip"
  artifact_object_version = "v1"
  artifact_sha256         = "00000000000000000000000000000000000000000000000000000000000000ff"
  keybridged_url          = "https://keybridged.example.org:8443"
  server_id               = "spiffe://example.org/keybridged"
  svid_secret_name        = "keybridge/svid/x"
}

output "schedules" {
  value = { for k, m in module.sync : k => m.schedule_expression }
}

output "function_names" {
  value = { for k, m in module.sync : k => m.function_name }
}
