"""Every action the function serves, by name: the round protocol, the job control plane, the device registry."""

from __future__ import annotations

from flcore.actions import protocol as actions
from flcore.actions import devices as device_actions
from flcore.actions import jobs as job_actions
from flcore.actions import predict as predictions
from flcore.actions.protocol import Action

ACTIONS: dict[str, Action] = {
    **actions.ACTIONS,
    "start_training": job_actions.start_training,
    "create_job": job_actions.create_job,
    "start_job": job_actions.start_job,
    "stop_job": job_actions.stop_job,
    "update_job": job_actions.update_job,
    "list_jobs": job_actions.list_jobs,
    "report": job_actions.report,
    "register": device_actions.register,
    "update_device": device_actions.update_device,
    "offers": device_actions.offers,
    "join": device_actions.join,
    "leave": device_actions.leave,
    "devices": device_actions.devices,
    "predict": predictions.predict,
}
