"""The Hub side of a preload: resolve sources to a commit and a list of files with sizes and hashes.

Uses huggingface_hub's own metadata API, session, headers and token handling (HF_ENDPOINT,
HF_TOKEN); the download loop itself lives in fetch.py because huggingface_hub does not resume
across processes and does not check SHA-256.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass
from types import ModuleType

from ..errors import WanVolumeError
from .manifest import SourcePin
from .profiles import Source

log = logging.getLogger(__name__)


def http_module() -> ModuleType:
    """The HTTP library huggingface_hub's session is built on: ``httpx`` (huggingface_hub 1.x) or
    ``httpx2`` (2.x). Asked of the session itself, so the transport errors we catch are the ones
    the installed hub raises even when both libraries are installed."""
    from huggingface_hub.utils import get_session

    return importlib.import_module(type(get_session()).__module__.split(".")[0])


class HubError(WanVolumeError):
    """The Hub refused or failed: unknown repo, gated repo, no network."""


@dataclass
class RemoteFile:
    """One file to fetch: where it is on the Hub, where it goes, what it must hash to."""

    repo: str
    commit: str
    repo_path: str
    relpath: str                 # destination, relative to the models dir
    size: int
    sha256: str | None           # from the LFS pointer; None for small non-LFS files
    git_oid: str | None          # git blob sha1; checks non-LFS files
    url: str = ""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def auth_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers
    return build_hf_headers(library_name="comfyui-wanvolume")


def resolve(sources: tuple[Source, ...] | list[Source], retries: int = 5,
            backoff_s: float = 1.0) -> tuple[list[SourcePin], list[RemoteFile]]:
    """Pin each source to a commit and list the files it contributes."""
    pins: list[SourcePin] = []
    files: dict[str, RemoteFile] = {}
    for source in sources:
        info = _model_info(source, retries, backoff_s)
        pins.append(SourcePin(source.repo, source.revision, info.sha))
        chosen = [s for s in info.siblings or [] if source.wants(s.rfilename)]
        if not chosen:
            raise HubError(f"no file in {source.repo}@{info.sha[:12]} matches "
                           f"{', '.join(source.include)}", field="--include",
                           value=list(source.include),
                           fix=f"check the file names at {endpoint()}/{source.repo}/tree/{source.revision}")
        for s in chosen:
            rf = _remote_file(source, info.sha, s)
            files.setdefault(rf.relpath, rf)
    return pins, list(files.values())


def _remote_file(source: Source, commit: str, sibling: object) -> RemoteFile:
    from huggingface_hub import hf_hub_url
    path = sibling.rfilename  # type: ignore[attr-defined]
    lfs = sibling.lfs  # type: ignore[attr-defined]
    size = lfs.size if lfs else sibling.size  # type: ignore[attr-defined]
    if size is None:
        raise HubError("the Hub sent no file size", field="file", value=f"{source.repo}/{path}",
                       fix="retry later; if it persists the endpoint is not a Hugging Face Hub")
    return RemoteFile(source.repo, commit, path, source.destination(path), int(size),
                      lfs.sha256 if lfs else None, sibling.blob_id,  # type: ignore[attr-defined]
                      hf_hub_url(source.repo, path, revision=commit, endpoint=endpoint()))


def _model_info(source: Source, retries: int, backoff_s: float) -> object:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors
    api = HfApi(endpoint=endpoint(), library_name="comfyui-wanvolume")
    for attempt in range(retries + 1):
        try:
            return api.model_info(source.repo, revision=source.revision, files_metadata=True,
                                  timeout=30)
        except hf_errors.OfflineModeIsEnabled:
            raise offline_error(source.repo) from None
        except (hf_errors.GatedRepoError, hf_errors.RepositoryNotFoundError,
                hf_errors.RevisionNotFoundError) as exc:
            raise _explain(source, exc) from None
        except hf_errors.HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", 0)
            if status in (401, 403):
                raise _explain(source, exc) from None
            if (status < 500 and status != 429) or attempt == retries:
                raise HubError(f"the Hub answered {status} for the repo metadata",
                               field="--repo", value=source.repo,
                               fix="check the repo name and revision; retry later") from None
            log.warning("Hub answered %s for %s; retry %d/%d", status, source.repo,
                        attempt + 1, retries)
        except http_module().TransportError as exc:
            _network_retry(source, exc, attempt, retries)
        time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def offline_error(what: str) -> HubError:
    return HubError("HF_HUB_OFFLINE=1 is set, so huggingface_hub refuses to reach the Hub",
                    field="HF_HUB_OFFLINE", value=os.environ.get("HF_HUB_OFFLINE", "1"),
                    fix=f"unset HF_HUB_OFFLINE (or set it to 0) to fetch {what}; offline, "
                        "`python wanvolume.py check`, `verify` and `adopt` still work")


def _network_retry(source: Source, exc: Exception, attempt: int, retries: int) -> None:
    if attempt == retries:
        raise HubError(f"cannot reach the Hub at {endpoint()} ({type(exc).__name__}: {exc})",
                       field="--repo", value=source.repo,
                       fix="check the network or HF_ENDPOINT, then run the same command again; "
                           "files already fetched are kept") from None
    log.warning("network error on %s metadata (%s); retry %d/%d", source.repo, exc,
                attempt + 1, retries)


def _explain(source: Source, exc: Exception) -> HubError:
    from huggingface_hub import errors as hf_errors
    status = getattr(getattr(exc, "response", None), "status_code", 0)
    page = f"https://huggingface.co/{source.repo}"
    token = "HF_TOKEN is set" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return HubError("no such revision in the repo", field="--revision", value=source.revision,
                        fix=f"use a branch, tag or commit listed at {page}/tree/main")
    if isinstance(exc, hf_errors.GatedRepoError) or status in (401, 403):
        return HubError(f"the Hub refused access ({status}); the repo is gated or private and "
                        f"{token}", field="--repo", value=source.repo,
                        fix=f"set HF_TOKEN to a token of an account that has accepted the licence "
                            f"at {page} (open the page, accept the licence, create a read token)")
    return HubError(f"no such repo on the Hub ({status})", field="--repo", value=source.repo,
                    fix="check the spelling (OWNER/NAME) or pick a --profile; "
                        "`python wanvolume.py preload --help` lists them")
