"""The portal for people: sign-in now; the resident portal (掌上医院) and the staff console grow
here. Server-rendered (Jinja2), Chinese first with English, mobile first."""
