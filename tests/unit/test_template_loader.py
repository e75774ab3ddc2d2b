"""local/template.py: template.yaml as CloudFormation sees it after AWS::LanguageExtensions (via cfn-lint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.template import TemplateError, load_template

LOOP = """
AWSTemplateFormatVersion: 2010-09-09
Transform: [AWS::LanguageExtensions, AWS::Serverless-2016-10-31]
Mappings:
  Actions:
    One: {Slug: one}
    Two: {Slug: two}
Conditions:
  InUsEast1: !Equals [!Ref AWS::Region, us-east-1]
Resources:
  Fn::ForEach::Actions:
    - Action
    - [One, Two]
    - ${Action}Queue:
        Type: AWS::SQS::Queue
        Properties:
          RedrivePolicy: {deadLetterTargetArn: !GetAtt [!Sub "${Action}Dlq", Arn], maxReceiveCount: 5}
          Tags:
            - {Key: slug, Value: !FindInMap [Actions, !Ref Action, Slug]}
            - {Key: dlq, Value: !Ref {Fn::Sub: "${Action}Dlq"}}
      ${Action}Dlq:
        Type: AWS::SQS::Queue
        Properties:
          Tags: [{Key: name, Value: !Sub "${AWS::StackName}-${Action}"}]
Outputs:
  Fn::ForEach::Urls:
    - Action
    - [One, Two]
    - ${Action}QueueUrl: {Value: !Ref {Fn::Sub: "${Action}Queue"}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def test_for_each_is_expanded_into_plain_cloudformation(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, LOOP))
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"   # a string, not a date
    assert sorted(template["Resources"]) == ["OneDlq", "OneQueue", "TwoDlq", "TwoQueue"]
    queue = template["Resources"]["TwoQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["TwoDlq", "Arn"]}
    assert queue["Tags"] == [{"Key": "slug", "Value": "two"}, {"Key": "dlq", "Value": {"Ref": "TwoDlq"}}]
    assert template["Resources"]["OneDlq"]["Properties"]["Tags"][0]["Value"] == {"Fn::Sub": "${AWS::StackName}-One"}
    assert template["Outputs"] == {"OneQueueUrl": {"Value": {"Ref": "OneQueue"}},
                                   "TwoQueueUrl": {"Value": {"Ref": "TwoQueue"}}}
    # What the loop does not touch stays as written (cfn-lint's Template would reorder this Fn::Equals).
    assert template["Conditions"]["InUsEast1"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert type(template["Resources"]) is dict and type(template["AWSTemplateFormatVersion"]) is str


@pytest.mark.parametrize("text", [
    "Resources:\n  A: {Type: AWS::SQS::Queue}\n  A: {Type: AWS::SQS::Queue}\n",
    "Resources: [unclosed\n",
    "- a list\n",
    LOOP.replace("[One, Two]\n    - ${Action}Queue", "[One, One]\n    - ${Action}Queue"),
], ids=["duplicate-key", "bad-yaml", "not-a-mapping", "loop-makes-a-duplicate"])
def test_what_cloudformation_rejects_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(TemplateError):
        load_template(write(tmp_path, text))
