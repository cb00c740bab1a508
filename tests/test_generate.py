"""The cookiecutter-tranzit template and ``tranzit project`` (tranzit/generate.py).

Projects are generated for real (cookiecutter's API, its CLI and ``tranzit
project``) into tmp dirs and checked file by file. Running a generated
project and its own test suite is in test_generate_run.py (marked slow).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from support import clean_env

import tranzit
from tranzit.errors import TranzitError
from tranzit.generate import (
    RUN_COMMAND,
    TEST_COMMAND,
    InvalidOptionError,
    ProjectExistsError,
    generate_project,
    next_steps,
    parse_overrides,
    template_dir,
)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "cookiecutter-tranzit"
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project_slug}}"
WORKFLOW = Path(".github", "workflows", "ci.yml")
OPTIONS = [
    "project_name",
    "project_slug",
    "description",
    "author",
    "first_app",
    "http_port",
    "ws_port",
    "python_version",
    "include_example",
    "include_ci",
    "https",
    "database",
    "image_name",
]
EXAMPLE_ONLY = [
    "apps/{app}/rules.py",
    "apps/{app}/static/app.js",
    "tests/test_rules.py",
    "tests/test_login.py",
]


@pytest.fixture(autouse=True)
def cookiecutter_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cookiecutter user config of our own: no ~/.cookiecutterrc, replays kept in tmp."""
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cookiecutters_dir": str(tmp_path / "cookiecutters"),
                "replay_dir": str(tmp_path / "replay"),
                "default_context": {},
            }
        )
    )
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))
    return config


def generate(out: Path, config: Path, **options: str) -> Path:
    """Generate with cookiecutter's own API, as ``cookiecutter`` users do."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=options,
            output_dir=str(out),
            config_file=str(config),
        )
    )


def files_of(project: Path) -> dict[str, Path]:
    return {p.relative_to(project).as_posix(): p for p in project.rglob("*") if p.is_file()}


# -- the template itself ----------------------------------------------------------------


def test_template_options_are_the_documented_ones() -> None:
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    assert [key for key in context if not key.startswith("_")] == OPTIONS
    assert context["python_version"] == ["3.12", "3.11", "3.13", "3.10"]
    assert context["include_example"] == ["yes", "no"]
    assert context["include_ci"] == ["yes", "no"]
    assert context["https"] == ["yes", "no"]
    assert context["database"] == ["none", "postgres"]
    assert set(context["__prompts__"]) == set(OPTIONS)


def test_template_holds_no_tool_caches() -> None:
    """Caches would be copied into every project (and into the wheel, which ignores .gitignore)."""
    caches = [
        p.relative_to(TEMPLATE).as_posix()
        for p in TEMPLATE.rglob("*")
        if p.name in {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
        or p.suffix == ".pyc"
    ]
    assert caches == []


def test_template_dir_is_the_checkout_template_in_an_editable_install() -> None:
    if (Path(tranzit.__file__).parent / "_template").is_dir():
        pytest.skip("tranzit is installed from a wheel here; test_generate_run checks that case")
    assert template_dir() == TEMPLATE


# -- every combination of the yes/no options, and a sample of the others ----------------

COMBINATIONS: list[dict[str, str]] = [
    {"include_example": "yes", "include_ci": "yes", "database": "none"},
    {
        "include_example": "no",
        "include_ci": "yes",
        "database": "postgres",
        "first_app": "blog",
        "python_version": "3.10",
    },
    {
        "include_example": "yes",
        "include_ci": "no",
        "database": "postgres",
        "https": "no",
        "project_name": 'Tom\'s "Site" & <Co>',
        "description": 'Quotes " and \\ and {braces}',
        "http_port": "8000",
        "ws_port": "8001",
        "python_version": "3.13",
    },
    {
        "include_example": "no",
        "include_ci": "no",
        "database": "none",
        "https": "no",
        "project_name": "ops-dashboard",
        "first_app": "dash_board",
        "python_version": "3.11",
        "image_name": "registry.example.com:5000/team/ops",
    },
]


@pytest.mark.parametrize(
    "options",
    COMBINATIONS,
    ids=lambda o: f"example-{o['include_example']}-ci-{o['include_ci']}-db-{o['database']}",
)
def test_generated_project(
    tmp_path: Path, cookiecutter_config: Path, options: dict[str, str]
) -> None:
    project = generate(tmp_path / "out", cookiecutter_config, **options)
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    app = options.get("first_app", context["first_app"])
    example = options["include_example"] == "yes"
    ci = options["include_ci"] == "yes"
    postgres = options["database"] == "postgres"
    files = files_of(project)

    # The layout of the original `tranzit project`, plus what the template adds.
    for name in [
        "__init__.py",
        "main.py",
        "server.yml",
        "apps/__init__.py",
        f"apps/{app}/__init__.py",
        f"apps/{app}/routes.py",
        f"apps/{app}/views.py",
        f"apps/{app}/templates/index.html",
        f"apps/{app}/static/app.css",
        "common/static/site.css",
        "common/static/favicon.png",
        "tests/conftest.py",
        "tests/test_pages.py",
        "requirements.txt",
        "requirements-dev.txt",
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".gitattributes",
        ".editorconfig",
    ]:
        assert name in files, name
    for name in EXAMPLE_ONLY:
        assert (name.format(app=app) in files) is example, name
    assert (WORKFLOW.as_posix() in files) is ci
    assert (project / ".github").exists() is ci
    # Alembic's scripts come with the database; the example's table with the example.
    for name in ["migrations/env.py", "migrations/script.py.mako"]:
        assert (name in files) is postgres, name
    assert (project / "migrations").exists() is postgres
    chat_table = "migrations/versions/0001_chat_history.py"
    assert (chat_table in files) is (postgres and example)

    # Nothing unrendered, except the workflow that must keep GitHub's ${{ }} and the
    # page templates, which aiohttp-jinja2 renders again: those must be valid Jinja.
    for name, path in files.items():
        data = path.read_bytes()
        if name.startswith(".github/workflows/") or name.endswith(".png"):
            continue
        text = data.decode("utf-8")
        assert "cookiecutter." not in text, name
        if f"apps/{app}/templates/" in name:
            jinja2.Environment().parse(text)
            continue
        for marker in ("{{", "{%", "{#"):
            assert marker not in text, f"{name} contains {marker!r}"
        if name.endswith(".py"):
            compile(text, name, "exec")

    # Copied untouched: the workflow (with its ${{ }}) and binary files.
    if ci:
        assert files[WORKFLOW.as_posix()].read_bytes() == (PROJECT_TEMPLATE / WORKFLOW).read_bytes()
        assert "${{" in files[WORKFLOW.as_posix()].read_text()
        settings = dict(
            line.split("=", 1)
            for line in (project / ".github" / "ci.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert settings == {
            "IMAGE_NAME": options.get("image_name", "ghcr.io/your-name/my-tranzit-site"),
            "PYTHON_VERSION": options.get("python_version", "3.12"),
        }
    favicon = PROJECT_TEMPLATE / "common" / "static" / "favicon.png"
    assert files["common/static/favicon.png"].read_bytes() == favicon.read_bytes()

    # Settings and pins.
    server = yaml.safe_load((project / "server.yml").read_text())
    assert server == {
        "http_host": "127.0.0.1",
        "http_port": int(options.get("http_port", 3000)),
        "ws_server_on": True,
        "ws_host": "127.0.0.1",
        "ws_port": int(options.get("ws_port", 19719)),
        "apps": [app],
        "production": False,
    }
    requirements = (project / "requirements.txt").read_text().splitlines()
    extra = "[postgres]" if postgres else ""
    assert f"tranzit{extra}=={tranzit.__version__}" in requirements
    # .env came with its own secrets; the database password is used in a URL as it is.
    env = dict(
        line.split("=", 1)
        for line in (project / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert len(env["TRANZIT_SECRET_KEY"]) >= 64
    if postgres:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", env["POSTGRES_PASSWORD"])
        assert "POSTGRES_PASSWORD=\n" in (project / ".env.example").read_text()
    else:
        assert "POSTGRES_PASSWORD" not in env
    pyproject = (project / "pyproject.toml").read_text()
    assert 'asyncio_mode = "auto"' in pyproject

    # Free text is escaped where it lands in HTML.
    page = render_page(project, app, user="someone")
    if "<Co>" in options.get("project_name", ""):
        assert "<Co>" not in page
        assert "Tom&#39;s &#34;Site&#34; &amp; &lt;Co&gt;" in page
    assert ('<script src="/static/tranzit/tz.js">' in page) is example
    assert ('id="login-form"' in render_page(project, app)) is example
    routes = (project / "apps" / app / "routes.py").read_text()
    assert ('"echo": echo' in routes) is example
    assert ("ws_connect = session_identity(USER)" in routes) is example
    assert ("ws_rules = {}" in routes) is not example
    # Without the example, none of its styles are left behind.
    css = (project / "apps" / app / "static" / "app.css").read_text()
    assert ("#chat-log" in css and "#clock" in css) is example
    if not example:
        assert "{" not in css

    # The project's own linter settings: clean, and formatted.
    for command in (["check", "."], ["format", "--check", "."]):
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", *command],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def render_page(project: Path, app: str, **context: str) -> str:
    """The app's page template as aiohttp-jinja2 renders it (``static`` as tranzit sets it)."""
    env = jinja2.Environment(
        loader=jinja2.PrefixLoader(
            {app: jinja2.FileSystemLoader(project / "apps" / app / "templates")}
        ),
        autoescape=True,
    )
    env.globals["static"] = lambda path: "/static/" + path
    return env.get_template(f"{app}/index.html").render(context)


def test_free_text_stays_text_in_the_page_template(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    """The page is rendered again per request: braces in the description are no Jinja."""
    # cookiecutter renders the answers themselves first: this one becomes "{{ 6 * 7 }} ...".
    text = '{{ "{{ 6 * 7 }} {% if x %} {# y #}" }}'
    project = generate(tmp_path, cookiecutter_config, description=text)
    page = render_page(project, "hello")
    assert "42" not in page
    assert "&#123;&#123; 6 * 7 }} &#123;% if x %} &#123;# y #}" in page


def test_readme_holds_the_two_next_step_commands(tmp_path: Path, cookiecutter_config: Path) -> None:
    project = generate(tmp_path, cookiecutter_config)
    readme = (project / "README.md").read_text()
    blocks = readme.split("```")[1::2]
    commands = [line for block in blocks for line in block.splitlines()[1:]]
    assert RUN_COMMAND in commands
    assert TEST_COMMAND in commands
    steps = next_steps(project)
    assert RUN_COMMAND in steps and TEST_COMMAND in steps
    assert "http://127.0.0.1:3000/" in steps


# -- invalid options: one line, exit 1 from the hook, nothing left behind ----------------

INVALID: list[tuple[dict[str, str], str]] = [
    ({"project_name": "2048 game"}, "project_slug: expected a Python identifier"),
    ({"project_slug": "my-site"}, "project_slug: expected a Python identifier"),
    ({"project_slug": "class"}, "project_slug: 'class' is a Python keyword"),
    ({"project_slug": "json"}, "project_slug: 'json' would shadow the standard library module"),
    ({"project_slug": "tranzit"}, "project_slug: 'tranzit' is reserved"),
    ({"first_app": "tests"}, "first_app: 'tests' is reserved"),
    ({"first_app": "common"}, "first_app: 'common' is reserved"),
    ({"first_app": "asyncio"}, "first_app: 'asyncio' would shadow the standard library module"),
    ({"first_app": "import"}, "first_app: 'import' is a Python keyword"),
    ({"first_app": "héllo"}, "first_app: expected a Python identifier"),
    ({"first_app": 'a"b'}, "first_app: expected a Python identifier"),
    ({"http_port": "0"}, "http_port: expected an integer from 1 to 65535, found '0'"),
    ({"http_port": "65536"}, "http_port: expected an integer from 1 to 65535, found '65536'"),
    ({"ws_port": "http"}, "ws_port: expected an integer from 1 to 65535, found 'http'"),
    ({"ws_port": "3000"}, "ws_port: expected a port different from http_port, found 3000"),
    ({"image_name": "GHCR.io/Me/App:latest"}, "image_name: expected a lowercase image name"),
    ({"image_name": "ghcr.io/me/app:1.0"}, "image_name: expected a lowercase image name"),
]


@pytest.mark.parametrize(
    ("options", "message"), INVALID, ids=[f"{k}={v}" for (o, _) in INVALID for k, v in o.items()]
)
def test_plain_cookiecutter_rejects_invalid_option(
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
    options: dict[str, str],
    message: str,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(FailedHookException):
        generate(out, cookiecutter_config, **options)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cookiecutter-tranzit:")]
    assert len(lines) == 1, err
    assert message in lines[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"), INVALID, ids=[f"{k}={v}" for (o, _) in INVALID for k, v in o.items()]
)
def test_generate_project_rejects_invalid_option(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidOptionError) as info:
        generate_project(None, output_dir=out, extra_context=options, no_input=True, force=False)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("python_version", "3.9"),
        ("include_example", "maybe"),
        ("include_ci", "1"),
        ("https", "on"),
        ("database", "mysql"),
    ],
)
def test_choice_outside_its_list_is_rejected(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        generate_project(
            None, output_dir=tmp_path, extra_context={key: value}, no_input=True, force=False
        )
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{key}: expected one of ")
    assert str(info.value).endswith(f"found {value!r}")
    assert list(tmp_path.iterdir()) == [tmp_path / "cookiecutter-config.yaml"]


@pytest.mark.parametrize("key", ["no_such_option", "_tranzit_version", "_copy_without_render"])
def test_unknown_or_private_option_is_rejected(tmp_path: Path, key: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidOptionError) as info:
        generate_project(None, output_dir=out, extra_context={key: "x"}, no_input=True, force=False)
    assert info.value.exit_code == 2
    assert f"unknown template option {key!r}" in str(info.value)
    assert "first_app" in str(info.value)  # the message lists the real options
    assert not out.exists()


# -- generate_project: names, existing directories, overrides ----------------------------


def test_generate_project_defaults(tmp_path: Path) -> None:
    project = generate_project(
        None, output_dir=tmp_path, extra_context={}, no_input=True, force=False
    )
    assert project == tmp_path / "my_tranzit_site"
    assert (project / "apps" / "hello" / "rules.py").is_file()
    requirements = (project / "requirements.txt").read_text()
    assert f"tranzit=={tranzit.__version__}\n" in requirements


def test_name_sets_project_name_and_slug(tmp_path: Path) -> None:
    project = generate_project(
        "Blog Engine",
        output_dir=tmp_path,
        extra_context={"first_app": "posts"},
        no_input=True,
        force=False,
    )
    assert project == tmp_path / "blog_engine"
    assert (project / "README.md").read_text().startswith("# Blog Engine\n")
    assert (project / "apps" / "posts" / "routes.py").is_file()


def test_old_style_name_gives_the_same_directory(tmp_path: Path) -> None:
    """``tranzit project mysite`` created ./mysite in the original too."""
    project = generate_project(
        "mysite", output_dir=tmp_path, extra_context={}, no_input=True, force=False
    )
    assert project == tmp_path / "mysite"


def test_existing_non_empty_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "mysite"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ProjectExistsError) as info:
        generate_project(
            "mysite", output_dir=tmp_path, extra_context={}, no_input=True, force=False
        )
    assert info.value.exit_code == 1
    assert str(target) in str(info.value) and "--force" in str(info.value)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_empty_name_is_an_invalid_option_not_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(InvalidOptionError, match=r"^project_slug: expected a Python identifier"):
        generate_project("", output_dir=tmp_path, extra_context={}, no_input=True, force=False)


def test_existing_empty_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "mysite").mkdir()
    project = generate_project(
        "mysite", output_dir=tmp_path, extra_context={}, no_input=True, force=False
    )
    assert (project / "main.py").is_file()


def test_existing_file_is_refused_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "mysite").write_text("a file")
    with pytest.raises(ProjectExistsError):
        generate_project("mysite", output_dir=tmp_path, extra_context={}, no_input=True, force=True)


def test_force_writes_over_an_existing_project(tmp_path: Path) -> None:
    project = generate_project(
        "mysite", output_dir=tmp_path, extra_context={}, no_input=True, force=False
    )
    (project / "main.py").write_text("broken")
    (project / "notes.txt").write_text("mine")
    env = (project / ".env").read_text()
    again = generate_project(
        "mysite",
        output_dir=tmp_path,
        extra_context={"http_port": "8123", "database": "postgres"},
        no_input=True,
        force=True,
    )
    assert again == project
    assert "tranzit.cli import main" in (project / "main.py").read_text()
    assert (project / "notes.txt").read_text() == "mine"  # --force overwrites, it does not wipe
    assert (project / ".env").read_text() == env  # its secrets are kept, none added
    assert yaml.safe_load((project / "server.yml").read_text())["http_port"] == 8123


def test_invalid_option_with_force_leaves_the_existing_directory_alone(tmp_path: Path) -> None:
    target = tmp_path / "mysite"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidOptionError):
        generate_project(
            "mysite",
            output_dir=tmp_path,
            extra_context={"ws_port": "3000"},
            no_input=True,
            force=True,
        )
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_errors_are_tranzit_errors() -> None:
    assert issubclass(InvalidOptionError, TranzitError)
    assert issubclass(ProjectExistsError, TranzitError)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        (["first_app=blog"], {"first_app": "blog"}),
        (["description=a=b"], {"description": "a=b"}),
        (["author="], {"author": ""}),
        (["http_port=1", "http_port=2"], {"http_port": "2"}),
    ],
)
def test_parse_overrides(items: list[str], expected: dict[str, str]) -> None:
    assert parse_overrides(items) == expected


@pytest.mark.parametrize("item", ["first_app", "=blog", " =x"])
def test_parse_overrides_rejects_malformed_items(item: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        parse_overrides([item])
    assert info.value.exit_code == 2
    assert repr(item) in str(info.value)


def test_next_steps_names_the_directory_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = generate_project(
        "My Site",
        output_dir=tmp_path,
        extra_context={"http_port": "8080", "ws_port": "8081"},
        no_input=True,
        force=False,
    )
    monkeypatch.chdir(tmp_path)
    steps = next_steps(project).splitlines()
    assert steps[0] == "Next steps:"
    assert steps[1] == "  cd my_site"
    assert steps[2].split("#")[0].strip() == RUN_COMMAND
    assert "http://127.0.0.1:8080/" in steps[2]
    assert steps[3].split("#")[0].strip() == TEST_COMMAND


# -- the command line: `tranzit project` and plain `cookiecutter` --------------------------


def run_cli(*args: str, cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tranzit", "project", *args],
        cwd=cwd,
        env=clean_env(COOKIECUTTER_CONFIG=str(config)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_project_creates_refuses_and_forces(tmp_path: Path, cookiecutter_config: Path) -> None:
    created = run_cli("mysite", "--no-input", cwd=tmp_path, config=cookiecutter_config)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "mysite" / "main.py").is_file()
    assert f"Created {tmp_path / 'mysite'}" in created.stdout
    assert RUN_COMMAND in created.stdout and TEST_COMMAND in created.stdout
    assert "cd mysite" in created.stdout

    again = run_cli("mysite", "--no-input", cwd=tmp_path, config=cookiecutter_config)
    assert again.returncode == 1
    assert again.stderr.startswith("tranzit: ")
    assert "already exists and is not empty" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    forced = run_cli("mysite", "--no-input", "--force", cwd=tmp_path, config=cookiecutter_config)
    assert forced.returncode == 0, forced.stderr


def test_cli_key_value_overrides_and_output_dir(tmp_path: Path, cookiecutter_config: Path) -> None:
    out = tmp_path / "projects"
    result = run_cli(
        "shop",
        "first_app=catalog",
        "http_port=8123",
        "include_ci=no",
        "--no-input",
        "--output-dir",
        str(out),
        cwd=tmp_path,
        config=cookiecutter_config,
    )
    assert result.returncode == 0, result.stderr
    project = out / "shop"
    assert yaml.safe_load((project / "server.yml").read_text())["http_port"] == 8123
    assert (project / "apps" / "catalog" / "views.py").is_file()
    assert not (project / ".github").exists()


def test_cli_options_may_come_before_key_values(tmp_path: Path, cookiecutter_config: Path) -> None:
    result = run_cli(
        "mysite", "--no-input", "first_app=blog", cwd=tmp_path, config=cookiecutter_config
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mysite" / "apps" / "blog").is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mysite", "first_app=class"], "tranzit: first_app: 'class' is a Python keyword"),
        (["mysite", "ws_port=3000"], "tranzit: ws_port: expected a port different from http_port"),
        (["mysite", "python_version=2.7"], "tranzit: python_version: expected one of"),
        (["mysite", "colour=blue"], "tranzit: unknown template option 'colour'"),
        (["mysite", "first_app"], "tranzit: expected a template option as KEY=VALUE"),
    ],
)
def test_cli_bad_option_exits_2(
    tmp_path: Path, cookiecutter_config: Path, args: list[str], message: str
) -> None:
    result = run_cli(*args, "--no-input", cwd=tmp_path, config=cookiecutter_config)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "mysite").exists()


def test_cli_without_cookiecutter_says_so_in_one_line(tmp_path: Path) -> None:
    # As in the runtime image, which installs tranzit without the generator.
    code = (
        "import sys; sys.modules['cookiecutter'] = None; from tranzit.cli import main; "
        "sys.exit(main(['project', 'mysite', '--no-input']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("tranzit: tranzit project needs cookiecutter"), result.stderr
    assert "pip install" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "mysite").exists()


def run_cookiecutter(*args: str, cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--config-file", str(config), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cookiecutter_cli_with_repo_and_directory(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    """``cookiecutter <repo> --directory cookiecutter-tranzit``, as from gh:<owner>/tranzit."""
    out = tmp_path / "out"
    result = run_cookiecutter(
        str(REPO),
        "--directory",
        "cookiecutter-tranzit",
        "--no-input",
        "-o",
        str(out),
        cwd=tmp_path,
        config=cookiecutter_config,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "my_tranzit_site" / "apps" / "hello" / "rules.py").is_file()


def test_cookiecutter_cli_from_repo_root(tmp_path: Path, cookiecutter_config: Path) -> None:
    out = tmp_path / "out"
    result = run_cookiecutter(
        "cookiecutter-tranzit",
        "--no-input",
        "-o",
        str(out),
        "first_app=blog",
        cwd=REPO,
        config=cookiecutter_config,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "my_tranzit_site" / "apps" / "blog" / "routes.py").is_file()


def test_cookiecutter_cli_bad_option_leaves_nothing(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter(
        "cookiecutter-tranzit",
        "--no-input",
        "-o",
        str(out),
        "first_app=json",
        cwd=REPO,
        config=cookiecutter_config,
    )
    assert result.returncode != 0
    assert "cookiecutter-tranzit: first_app: 'json' would shadow" in result.stderr
    assert list(out.iterdir()) == []
