terraform {
  # 1.9: variable validations may refer to other variables (timeout < interval)
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}
