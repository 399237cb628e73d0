# The role keybridge-ca assumes (STS AssumeRole) in an account to store SVIDs there
# (src/ca/ca_target.c: DescribeSecret, CreateSecret with tags, GetResourcePolicy, RestoreSecret,
# PutSecretValue, DeleteSecret). Secrets Manager only, only under the prefix, and writes only to
# secrets tagged as this trust domain's.

data "aws_caller_identity" "current" {}

locals {
  secrets_arn = "arn:aws:secretsmanager:*:${data.aws_caller_identity.current.account_id}:secret:${var.secret_prefix}*"
  owned       = { "secretsmanager:ResourceTag/keybridge:trust-domain" = var.trust_domain }
  policy = {
    Version = "2012-10-17"
    Statement = [
      {
        # Reading metadata must work before the secret exists (ResourceNotFound, not AccessDenied)
        # and on a foreign secret, which the CA then refuses to touch.
        Sid      = "InspectUnderPrefix"
        Effect   = "Allow"
        Action   = ["secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy"]
        Resource = local.secrets_arn
      },
      {
        # Create only with both ownership tags, this trust domain's, and no other tags.
        Sid      = "CreateOwned"
        Effect   = "Allow"
        Action   = ["secretsmanager:CreateSecret", "secretsmanager:TagResource"]
        Resource = local.secrets_arn
        Condition = {
          StringEquals = { "aws:RequestTag/keybridge:trust-domain" = var.trust_domain }
          StringLike   = { "aws:RequestTag/keybridge:registration" = "spiffe://${var.trust_domain}/*" }
          "ForAllValues:StringEquals" = {
            "aws:TagKeys" = ["keybridge:trust-domain", "keybridge:registration"]
          }
        }
      },
      {
        Sid      = "WriteOwned"
        Effect   = "Allow"
        Action   = ["secretsmanager:PutSecretValue", "secretsmanager:RestoreSecret", "secretsmanager:DeleteSecret"]
        Resource = local.secrets_arn
        Condition = {
          StringEquals = local.owned
        }
      },
    ]
  }
}

resource "aws_iam_role" "svid_store" {
  name                 = var.role_name
  description          = "keybridge-ca (${var.trust_domain}) stores SVIDs under ${var.secret_prefix}"
  max_session_duration = var.max_session_duration
  permissions_boundary = var.permissions_boundary
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [merge(
      {
        Effect    = "Allow"
        Principal = { AWS = var.ca_principal_arns }
        Action    = "sts:AssumeRole"
      },
      # IAM refuses "Condition": null: the member is left out without an external ID
      var.external_id == null ? {} : { Condition = { StringEquals = { "sts:ExternalId" = var.external_id } } },
    )]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "svid_store" {
  name   = "keybridge-svid-store"
  role   = aws_iam_role.svid_store.id
  policy = jsonencode(local.policy)
}
