"""The contract: what an export is, in the API, on the ExportRequest and ExportSchedule
resources and for the exporter, with its catalog, errors and validation rules."""
