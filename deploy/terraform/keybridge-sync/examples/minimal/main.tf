# The smallest use of the module: every value is an example except `app`.
#   terraform init && terraform apply -var app=payments
terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

variable "app" {
  description = "Application name as keybridged knows it."
  type        = string
}

module "keybridge_sync" {
  source = "../.."

  app = var.app

  # scripts/package-lambda.sh OUTDIR, then upload to a versioned bucket (README "Deploy to AWS")
  artifact_bucket         = "example-keybridge-artifacts"
  artifact_key            = "keybridge-sync/keybridge-sync-lambda-x86_64.zip"
  artifact_object_version = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
  artifact_sha256         = "0000000000000000000000000000000000000000000000000000000000000000"
  architecture            = "x86_64"

  keybridged_url   = "https://keybridged.dc1.example.org:8443"
  server_id        = "spiffe://example.org/keybridged"
  svid_secret_name = "keybridge/svid/${var.app}"
}

output "schedule_expression" {
  value = module.keybridge_sync.schedule_expression
}
