"""``boneage dicom-node``: a DICOM Storage SCP that assesses hand radiographs where they arrive.

A modality or the PACS routes radiographs to the node (C-STORE); each one is written to a
spool folder before the sender is told it was stored, assessed by worker processes exactly as
``boneage predict`` does (reading, quality gate, model), and its results go back to a
destination (usually the PACS) by C-STORE: a Comprehensive SR with the bone age and its
reading, and the report page as a Secondary Capture, both in the source's study.

- :mod:`~boneage.dicomnode.settings`: the node's settings, from a YAML file and the command line.
- :mod:`~boneage.dicomnode.spool`: the spool folder (nothing lost across crashes and restarts).
- :mod:`~boneage.dicomnode.receive`: the Storage SCP's checks and C-STORE statuses.
- :mod:`~boneage.dicomnode.assess`: one spooled instance to its result objects.
- :mod:`~boneage.dicomnode.sr`: the structured report, written and read back.
- :mod:`~boneage.dicomnode.send`: C-STORE of the results with bounded backoff.
- :mod:`~boneage.dicomnode.node`: the running node (receiver, workers, sender).

Logs name AE titles, UIDs, timings and verdicts, never a patient's name, ID or dates.
"""
