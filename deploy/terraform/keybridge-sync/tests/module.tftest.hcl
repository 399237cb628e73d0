# The module's resources with a mocked AWS provider. Values computed by the real programs
# (`keybridge-sync iam-policy`, `keybridge-sync schedule`, the artifact's base64 SHA-256) come
# from tests/integration/test_terraform.py through a .tfvars.json file:
#   expected_syncer_policy, expected_function_policy (JSON), expected_cron, expected_sha256_base64
mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  # what Lambda reports for the zip whose SHA-256 is var.artifact_sha256 below
  mock_resource "aws_lambda_function" {
    defaults = {
      code_sha256 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
      arn         = "arn:aws:lambda:eu-west-1:111122223333:function:keybridge-sync-payments"
    }
  }
  # the provider checks ARN syntax: mocked ARNs must look like ARNs
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/keybridge-sync-payments" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/keybridge-sync-payments" }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = { arn = "arn:aws:events:eu-west-1:111122223333:rule/keybridge-sync-payments" }
  }
  mock_resource "aws_cloudwatch_metric_alarm" {
    defaults = { arn = "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:keybridge-sync-payments-failed" }
  }
}

variables {
  app                     = "payments"
  artifact_bucket         = "example-keybridge-artifacts"
  artifact_key            = "keybridge-sync/keybridge-sync-lambda-arm64.zip"
  artifact_object_version = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
  artifact_sha256         = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
  architecture            = "arm64"
  keybridged_url          = "https://keybridged.dc1.example.org:8443"
  server_id               = "spiffe://example.org/keybridged"
  svid_secret_name        = "keybridge/svid/payments"
}

run "function" {
  command = plan
  assert {
    condition     = aws_lambda_function.sync.runtime == "provided.al2023" && aws_lambda_function.sync.handler == "bootstrap"
    error_message = "runtime must be provided.al2023 with handler bootstrap"
  }
  assert {
    condition     = aws_lambda_function.sync.architectures == tolist(["arm64"])
    error_message = "architecture not passed through"
  }
  assert {
    condition     = aws_lambda_function.sync.memory_size == 128 && aws_lambda_function.sync.timeout == 300
    error_message = "default memory 128 MB and timeout 300 s expected"
  }
  assert {
    condition     = aws_lambda_function.sync.reserved_concurrent_executions == 1
    error_message = "runs must never overlap: reserved concurrency 1"
  }
  assert {
    condition = (aws_lambda_function.sync.s3_bucket == var.artifact_bucket &&
      aws_lambda_function.sync.s3_key == var.artifact_key &&
    aws_lambda_function.sync.s3_object_version == var.artifact_object_version)
    error_message = "artifact not pinned to bucket/key/object version"
  }
  assert {
    condition     = aws_lambda_function.sync.source_code_hash == var.expected_sha256_base64
    error_message = "source_code_hash ${aws_lambda_function.sync.source_code_hash} is not the base64 of artifact_sha256 (${var.expected_sha256_base64})"
  }
  assert {
    condition     = aws_lambda_function.sync.function_name == "keybridge-sync-payments"
    error_message = "function name"
  }
  assert {
    condition = aws_lambda_function.sync.environment[0].variables == tomap({
      KEYBRIDGE_SYNC_SOURCE_URL            = "https://keybridged.dc1.example.org:8443"
      KEYBRIDGE_SYNC_SOURCE_SERVER_ID      = "spiffe://example.org/keybridged"
      KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID = "keybridge/svid/payments"
      KEYBRIDGE_SYNC_SINK_TARGET           = "secretsmanager"
      KEYBRIDGE_SYNC_SINK_DELETE_POLICY    = "delete"
      KEYBRIDGE_SYNC_LOG_LEVEL             = "info"
    })
    error_message = "environment: ${jsonencode(aws_lambda_function.sync.environment[0].variables)}"
  }
  assert {
    condition     = length(aws_lambda_function.sync.vpc_config) == 0 && length(aws_iam_role_policy_attachment.vpc) == 0
    error_message = "no VPC unless subnets are given"
  }
  assert {
    condition     = aws_lambda_function_event_invoke_config.sync.maximum_retry_attempts == 0 && aws_lambda_function_event_invoke_config.sync.maximum_event_age_in_seconds == 900
    error_message = "scheduled invocations: no retries, a tick older than one interval is dropped"
  }
}

run "role_policy_is_iam_policy_output" {
  command = apply
  assert {
    condition     = jsondecode(aws_iam_role_policy.secrets.policy) == jsondecode(var.expected_syncer_policy)
    error_message = "role policy differs from `keybridge-sync iam-policy`: ${aws_iam_role_policy.secrets.policy}"
  }
  assert {
    condition     = jsondecode(output.function_policy_json) == jsondecode(var.expected_function_policy)
    error_message = "function_policy_json differs from `keybridge-sync iam-policy` function_role"
  }
  assert {
    condition     = aws_iam_role_policy.secrets.role == aws_iam_role.sync.id
    error_message = "policy not on the function's role"
  }
  assert {
    condition     = jsondecode(aws_iam_role.sync.assume_role_policy).Statement[0].Principal.Service == "lambda.amazonaws.com" && length(jsondecode(aws_iam_role.sync.assume_role_policy).Statement) == 1
    error_message = "only Lambda may assume the role"
  }
  assert {
    condition     = jsondecode(aws_iam_role.sync.assume_role_policy).Statement[0].Condition.StringEquals["aws:SourceAccount"] == "111122223333"
    error_message = "trust limited to this account"
  }
  assert {
    condition     = toset(jsondecode(aws_iam_role_policy.logs.policy).Statement[0].Action) == toset(["logs:CreateLogStream", "logs:PutLogEvents"])
    error_message = "logs policy: only CreateLogStream and PutLogEvents"
  }
}

run "schedule_and_logs" {
  command = apply
  assert {
    condition     = output.schedule_expression == var.expected_cron && aws_cloudwatch_event_rule.schedule.schedule_expression == var.expected_cron
    error_message = "schedule_expression ${output.schedule_expression} != keybridge-sync schedule payments (${var.expected_cron})"
  }
  assert {
    condition     = aws_cloudwatch_event_target.sync.arn == aws_lambda_function.sync.arn && aws_cloudwatch_event_target.sync.rule == aws_cloudwatch_event_rule.schedule.name
    error_message = "rule must target the function"
  }
  assert {
    condition = (aws_lambda_permission.schedule.principal == "events.amazonaws.com" &&
      aws_lambda_permission.schedule.source_arn == aws_cloudwatch_event_rule.schedule.arn &&
    aws_lambda_permission.schedule.action == "lambda:InvokeFunction")
    error_message = "only this rule may invoke the function"
  }
  assert {
    condition     = aws_cloudwatch_log_group.sync.name == "/aws/lambda/keybridge-sync-payments" && aws_cloudwatch_log_group.sync.retention_in_days == 30
    error_message = "log group /aws/lambda/<function> with 30 days retention"
  }
  assert {
    condition     = one([for q in aws_cloudwatch_metric_alarm.failed_runs.metric_query : q.metric[0] if q.id == "failed"]).namespace == "keybridge/sync"
    error_message = "alarm must read the syncer's EMF namespace keybridge/sync"
  }
  assert {
    condition     = one([for q in aws_cloudwatch_metric_alarm.failed_runs.metric_query : q.metric[0] if q.id == "failed"]).dimensions == tomap({ Application = "payments" })
    error_message = "alarm must use the EMF dimension Application = app"
  }
  assert {
    condition     = one([for q in aws_cloudwatch_metric_alarm.failed_runs.metric_query : q.metric[0] if q.id == "errors"]).dimensions == tomap({ FunctionName = "keybridge-sync-payments" })
    error_message = "alarm must count the function's Lambda Errors"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.failed_runs.threshold == 0 && aws_cloudwatch_metric_alarm.failed_runs.comparison_operator == "GreaterThanThreshold"
    error_message = "any failure alarms"
  }
}

# After apply the deployed CodeSha256 must be artifact_sha256.
run "deployed_code_must_match_sha256" {
  command   = apply
  state_key = "mismatch" # a fresh state: the function is created again
  override_resource {
    target = aws_lambda_function.sync
    values = {
      code_sha256 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
      arn         = "arn:aws:lambda:eu-west-1:111122223333:function:keybridge-sync-payments"
    }
  }
  expect_failures = [aws_lambda_function.sync]
}

run "vpc_and_options" {
  command = plan
  variables {
    app                    = "Pay.ments+eu@team_with-a-very-long-name-that-lambda-cannot-take"
    vpc_subnet_ids         = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    vpc_security_group_ids = ["sg-0123456789abcdef0"]
    regions                = ["eu-west-1", "eu-central-1"]
    interval               = 5
    log_retention_days     = 7
    max_delete_fraction    = 0.25
    delete_policy          = "retain"
    memory_size            = 256
    write_rate             = 5
  }
  assert {
    condition     = aws_lambda_function.sync.vpc_config[0].subnet_ids == toset(var.vpc_subnet_ids) && aws_lambda_function.sync.vpc_config[0].security_group_ids == toset(var.vpc_security_group_ids)
    error_message = "VPC settings not passed through"
  }
  assert {
    condition     = length(aws_iam_role_policy_attachment.vpc) == 1
    error_message = "a VPC function needs AWSLambdaVPCAccessExecutionRole"
  }
  assert {
    condition     = aws_lambda_function.sync.function_name == "keybridge-sync-Pay-ments-eu-team_with-a-very-lo-${substr(sha256(var.app), 0, 8)}"
    error_message = "long or special app names get a shortened, hashed function name: ${aws_lambda_function.sync.function_name}"
  }
  assert {
    condition     = aws_lambda_function.sync.timeout == 290 && aws_lambda_function.sync.memory_size == 256
    error_message = "interval 5: default timeout 290 s (ends before the next run)"
  }
  assert {
    condition = (aws_lambda_function.sync.environment[0].variables["KEYBRIDGE_SYNC_SINK_REGIONS"] == "eu-west-1,eu-central-1" &&
      aws_lambda_function.sync.environment[0].variables["KEYBRIDGE_SYNC_SINK_MAX_DELETE_FRACTION"] == "0.25" &&
      aws_lambda_function.sync.environment[0].variables["KEYBRIDGE_SYNC_SINK_RATE"] == "5" &&
    aws_lambda_function.sync.environment[0].variables["KEYBRIDGE_SYNC_SINK_DELETE_POLICY"] == "retain")
    error_message = "regions / delete settings not in the environment"
  }
  assert {
    condition     = startswith(jsondecode(aws_iam_role_policy.secrets.policy).Statement[0].Resource, "arn:aws:secretsmanager:*:111122223333:secret:keybridge/Pay.ments+eu@")
    error_message = "several regions: the policy names any region"
  }
  assert {
    condition     = aws_cloudwatch_log_group.sync.retention_in_days == 7 && aws_lambda_function_event_invoke_config.sync.maximum_event_age_in_seconds == 300
    error_message = "retention / event age"
  }
}

# ---- refused inputs -----------------------------------------------------------------------------

run "object_version_required" {
  command = plan
  variables {
    artifact_object_version = ""
  }
  expect_failures = [var.artifact_object_version]
}

run "sha256_must_be_hex" {
  command = plan
  variables {
    artifact_sha256 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
  }
  expect_failures = [var.artifact_sha256]
}

run "https_only" {
  command = plan
  variables {
    keybridged_url = "http://keybridged.dc1.example.org:8443"
  }
  expect_failures = [var.keybridged_url]
}

run "server_id_is_spiffe" {
  command = plan
  variables {
    server_id = "keybridged.example.org"
  }
  expect_failures = [var.server_id]
}

run "interval_divides_60" {
  command = plan
  variables {
    interval = 7
  }
  expect_failures = [var.interval]
}

run "timeout_shorter_than_interval" {
  command = plan
  variables {
    interval = 5
    timeout  = 300
  }
  expect_failures = [var.timeout]
}

run "vpc_needs_security_groups" {
  command = plan
  variables {
    vpc_subnet_ids = ["subnet-0123456789abcdef0"]
  }
  expect_failures = [var.vpc_security_group_ids]
}

run "app_name_rule" {
  command = plan
  variables {
    app = ".hidden"
  }
  expect_failures = [var.app]
}

run "app_name_limit" {
  command = plan
  variables {
    # KB_APP_NAME_MAX is 246: keybridge/<246>/<255> is Secrets Manager's 512
    app = "a${join("", [for i in range(246) : "b"])}"
  }
  expect_failures = [var.app]
}

run "write_rate_bounded" {
  command = plan
  variables {
    write_rate = 1001
  }
  expect_failures = [var.write_rate]
}

run "architecture_known" {
  command = plan
  variables {
    architecture = "aarch64"
  }
  expect_failures = [var.architecture]
}
