"""The request log pages: a blueprint with server-rendered templates and its own static files."""

from .views import create_blueprint as create_blueprint
from .views import curl_command as curl_command
