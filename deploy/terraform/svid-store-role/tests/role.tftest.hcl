mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "444455556666" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

variables {
  ca_principal_arns = ["arn:aws:iam::111122223333:role/keybridge-ca"]
  external_id       = "kb-example-org"
  trust_domain      = "example.org"
}

run "role" {
  command = plan
  assert {
    condition     = jsonencode(jsondecode(aws_iam_role.svid_store.assume_role_policy).Statement[0].Principal.AWS) == jsonencode(var.ca_principal_arns)
    error_message = "only keybridge-ca's principals may assume the role"
  }
  assert {
    condition     = jsondecode(aws_iam_role.svid_store.assume_role_policy).Statement[0].Condition.StringEquals["sts:ExternalId"] == "kb-example-org"
    error_message = "the external ID is required"
  }
  assert {
    condition     = aws_iam_role.svid_store.name == "keybridge-ca-svid-store" && aws_iam_role.svid_store.max_session_duration == 3600
    error_message = "role name / session duration"
  }
  assert {
    condition = toset(flatten([for s in jsondecode(aws_iam_role_policy.svid_store.policy).Statement : s.Action])) == toset([
      "secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy", "secretsmanager:CreateSecret",
      "secretsmanager:TagResource", "secretsmanager:PutSecretValue", "secretsmanager:RestoreSecret",
    "secretsmanager:DeleteSecret"])
    error_message = "exactly the Secrets Manager actions keybridge-ca uses (no GetSecretValue, no ListSecrets, nothing else)"
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_iam_role_policy.svid_store.policy).Statement : s.Resource == "arn:aws:secretsmanager:*:444455556666:secret:keybridge/svid/*" && s.Effect == "Allow"])
    error_message = "every statement limited to this account's prefix"
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.svid_store.policy).Statement : s if s.Sid == "WriteOwned"]).Condition.StringEquals["secretsmanager:ResourceTag/keybridge:trust-domain"] == "example.org"
    error_message = "writes and deletes only to secrets tagged with our trust domain"
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.svid_store.policy).Statement : s if s.Sid == "CreateOwned"]).Condition.StringEquals["aws:RequestTag/keybridge:trust-domain"] == "example.org"
    error_message = "creates must carry our trust-domain tag"
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.svid_store.policy).Statement : s if s.Sid == "CreateOwned"]).Condition.StringLike["aws:RequestTag/keybridge:registration"] == "spiffe://example.org/*"
    error_message = "creates must carry a registration tag in our trust domain"
  }
}

run "no_external_id" {
  command = plan
  variables {
    external_id = null
  }
  assert {
    condition     = !contains(keys(jsondecode(aws_iam_role.svid_store.assume_role_policy).Statement[0]), "Condition")
    error_message = "no Condition member (not even null) without an external ID"
  }
}

run "principals_required" {
  command = plan
  variables {
    ca_principal_arns = []
  }
  expect_failures = [var.ca_principal_arns]
}

run "prefix_ends_in_slash" {
  command = plan
  variables {
    secret_prefix = "keybridge"
  }
  expect_failures = [var.secret_prefix]
}
