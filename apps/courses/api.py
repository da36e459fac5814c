"""`/api/v1/courses/`: courses, their members, roster imports and invite links. A course is
404 to anyone who is not a member (apps.courses.access)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import FileResponse, Http404
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.request_user import authenticated_user
from apps.core.api import validated
from apps.core.parsers import BoundedJSONParser
from apps.core.schema import errors
from apps.core.uploads import blob_response, reject_oversized_body, reject_oversized_file

from . import assignments, gradebook, grading, manual, services, submissions
from .access import (
    CAN_MANAGE,
    assignment_for,
    course_for,
    courses_of,
    require_course_role,
    role_in,
    submissions_for,
)
from .assignments import MAX_ASSIGNMENT_BYTES
from .models import (
    STAFF_ROLES,
    Assignment,
    Course,
    CourseInvite,
    CourseMembership,
    CourseRole,
    Extension,
    FileGradingState,
    RegradeRequest,
    Submission,
)
from .serializers import (
    AssignmentCreateSerializer,
    AssignmentSerializer,
    CellGradeWriteSerializer,
    CourseMemberSerializer,
    CourseSerializer,
    ExtensionSerializer,
    InviteSerializer,
    JoinSerializer,
    MemberWriteSerializer,
    RegradeAnswerSerializer,
    RegradeAskSerializer,
    RegradeRequestSerializer,
    RosterSerializer,
    StaffSubmissionSerializer,
    SubmissionSerializer,
    SubmissionUploadSerializer,
)


class CourseListView(mixins.ListModelMixin, GenericAPIView):
    """GET: the courses you are a member of. POST `slug`, `title`: a new course, you its instructor."""

    serializer_class = CourseSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet[Course]:
        return courses_of(self.request.user)

    def get(self, request: Request) -> Response:
        return self.list(request)

    @extend_schema(request=CourseSerializer, responses={201: CourseSerializer})
    def post(self, request: Request) -> Response:
        data = validated(CourseSerializer, request.data)
        course = services.course_create(creator=authenticated_user(request), slug=data["slug"], title=data["title"])
        return Response(self.get_serializer(course_for(request.user, course.slug)).data, status=status.HTTP_201_CREATED)


class CourseDetailView(GenericAPIView):
    serializer_class = CourseSerializer
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, slug: str) -> Response:
        return Response(self.get_serializer(course_for(request.user, slug)).data)


class CourseMembersView(mixins.ListModelMixin, GenericAPIView):
    """GET: the members (a student sees the teaching staff and themselves, never other students).
    POST `username`, `role` (instructor, ta, student): add a member or change their role."""

    queryset = CourseMembership.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = CourseMemberSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    def get_queryset(self) -> QuerySet[CourseMembership]:
        course = course_for(self.request.user, self.kwargs["slug"])
        members = course.memberships.select_related("user").order_by("role", "user__username")
        if role_in(course) in STAFF_ROLES:
            return members
        return members.filter(Q(role__in=STAFF_ROLES) | Q(user=self.request.user))

    def get(self, request: Request, slug: str) -> Response:
        return self.list(request)

    @extend_schema(request=MemberWriteSerializer, responses={201: CourseMemberSerializer})
    def post(self, request: Request, slug: str) -> Response:
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "manage its members")
        data = validated(MemberWriteSerializer, request.data)
        membership = services.member_set(course=course, username=data["username"], role=data["role"])
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)


class CourseMemberDetailView(GenericAPIView):
    serializer_class = CourseMemberSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str, username: str) -> Response:
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "remove members")
        services.member_remove(course=course, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RosterView(GenericAPIView):
    """POST a multipart `file` (CSV: username or e-mail, name) to enrol its students; answers
    which rows were added, were members already, or failed and why."""

    serializer_class = RosterSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": RosterSerializer}, responses={200: None, **errors(413)})
    def post(self, request: Request, slug: str) -> Response:
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "import a roster")
        reject_oversized_body(request, services.MAX_ROSTER_BYTES)
        upload = validated(RosterSerializer, request.data)["file"]
        reject_oversized_file(upload.name, upload.size, services.MAX_ROSTER_BYTES)
        return Response(services.roster_import(course=course, content=upload.read()).as_json())


class InvitesView(mixins.ListModelMixin, GenericAPIView):
    """GET: the course's invite links (instructors). POST: a new one; its token and join URL are
    shown in this answer only."""

    queryset = CourseInvite.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = InviteSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet[CourseInvite]:
        course = course_for(self.request.user, self.kwargs["slug"])
        require_course_role(course, CAN_MANAGE, "see its invite links")
        return course.invites.all()

    def get(self, request: Request, slug: str) -> Response:
        return self.list(request)

    @extend_schema(request=None, responses={201: InviteSerializer})
    def post(self, request: Request, slug: str) -> Response:
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "make invite links")
        made = services.invite_create(course=course, creator=authenticated_user(request))
        body: dict[str, Any] = dict(self.get_serializer(made.invite).data)
        body["token"] = made.token
        body["join_url"] = request.build_absolute_uri(reverse("api-course-join"))
        return Response(body, status=status.HTTP_201_CREATED)


class InviteDetailView(GenericAPIView):
    serializer_class = InviteSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str, invite_id: int) -> Response:
        """Revoke the link: nobody joins through it any more (those who did stay members)."""
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "revoke invite links")
        services.invite_revoke(invite=get_object_or_404(CourseInvite, pk=invite_id, course=course))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JoinView(GenericAPIView):
    """POST `token` (from an invite link): join its course as a student."""

    serializer_class = JoinSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=JoinSerializer, responses={200: CourseSerializer, **errors(404)})
    def post(self, request: Request) -> Response:
        token = validated(JoinSerializer, request.data)["token"]
        try:
            course = services.join(user=authenticated_user(request), token=token)
        except LookupError as error:
            raise Http404(str(error)) from None
        return Response(CourseSerializer(course_for(request.user, course.slug)).data)


class AssignmentsView(mixins.ListModelMixin, GenericAPIView):
    """GET: the course's assignments (students: the released ones). POST (instructors), multipart:
    `name`, `files` (source notebooks in nbgrader's format and data files), `due_at`, the late
    policy, `max_submissions`, `results_visibility`."""

    queryset = Assignment.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = AssignmentSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Assignment]:
        course = course_for(self.request.user, self.kwargs["slug"])
        assignments = course.assignments.prefetch_related("files")
        return assignments if role_in(course) in STAFF_ROLES else assignments.filter(released_at__isnull=False)

    def get(self, request: Request, slug: str) -> Response:
        return self.list(request)

    @extend_schema(request={"multipart/form-data": AssignmentCreateSerializer}, responses={201: AssignmentSerializer})
    def post(self, request: Request, slug: str) -> Response:
        course = course_for(request.user, slug)
        require_course_role(course, CAN_MANAGE, "create assignments")
        reject_oversized_body(request, MAX_ASSIGNMENT_BYTES)
        data = dict(request.data.lists()) if hasattr(request.data, "lists") else dict(request.data)
        fields = {
            key: (value[0] if key != "files" and isinstance(value, list) else value) for key, value in data.items()
        }
        options = validated(AssignmentCreateSerializer, fields)
        uploads = options.pop("files")
        for upload in uploads:
            reject_oversized_file(upload.name, upload.size, settings.REPROLAB_NOTEBOOK_MAX_BYTES)
        assignment = assignments.assignment_create(
            course=course,
            creator=authenticated_user(request),
            name=options.pop("name"),
            files=[assignments.Incoming(path=u.name, content=u) for u in uploads],
            **options,
        )
        return Response(self.get_serializer(assignment).data, status=status.HTTP_201_CREATED)


def _files(request: Request) -> list[Any]:
    """Every `files` part of a multipart request (a plain dict would keep only the last)."""
    getlist = getattr(request.data, "getlist", None)
    return list(getlist("files")) if getlist is not None else []


def _assignment(request: Request, slug: str, name: str) -> tuple[Course, Assignment]:
    return assignment_for(request.user, slug, name)


class AssignmentDetailView(GenericAPIView):
    serializer_class = AssignmentSerializer
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, slug: str, name: str) -> Response:
        return Response(self.get_serializer(_assignment(request, slug, name)[1]).data)


class ReleaseView(GenericAPIView):
    """POST (instructors): release the assignment to the students. GET: the student version (a zip
    of the notebooks with solutions and hidden tests removed, and the data files), or one notebook
    with `?notebook=problem1.ipynb`."""

    serializer_class = AssignmentSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: AssignmentSerializer})
    def post(self, request: Request, slug: str, name: str) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, CAN_MANAGE, "release assignments")
        return Response(self.get_serializer(assignments.assignment_release(assignment=assignment)).data)

    @extend_schema(responses={(200, "application/zip"): bytes})
    def get(self, request: Request, slug: str, name: str) -> HttpResponseBase:
        _, assignment = _assignment(request, slug, name)
        wanted = request.query_params.get("notebook", "").replace("\x00", "")
        if wanted:
            found = assignment.files.filter(path=wanted[:500], is_notebook=True).first()
            if found is None:
                raise Http404("No such notebook in this assignment.")
            return blob_response(
                storage_name=found.student_storage_name,
                filename=found.path.rsplit("/", 1)[-1],
                sha256=found.student_sha256,
                content_type="application/x-ipynb+json",
            )
        return FileResponse(
            assignments.release_zip(assignment),
            as_attachment=True,
            filename=f"{assignment.name}.zip",
            content_type="application/zip",
        )


def _submissions(request: Request, course: Course, assignment: Assignment) -> QuerySet[Submission]:
    """The assignment's submissions the requester may see, with what their serializers read."""
    found = submissions_for(authenticated_user(request), course, assignment)
    return found.select_related("student", "assignment__course").prefetch_related("files__cells__changes__changed_by")


class SubmissionReadMixin(GenericAPIView):
    """Submissions as their reader may see them: teaching staff get the grader's notes too
    (StaffSubmissionSerializer); results only once visible to the reader."""

    def _staff(self) -> bool:
        return role_in(course_for(self.request.user, self.kwargs["slug"])) in STAFF_ROLES

    def get_serializer_class(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # the schema documents what students get
            return SubmissionSerializer
        return StaffSubmissionSerializer if self._staff() else SubmissionSerializer

    def serialize(self, found: Any, *, many: bool = False) -> Any:
        rows = list(found) if many else [found]
        staff = self._staff()
        visible = {s.pk: submissions.results_visible(s, staff=staff) for s in rows}
        context = {**self.get_serializer_context(), "staff": staff, "results_visible": visible}
        return self.get_serializer_class()(found, many=many, context=context).data


class SubmissionsView(SubmissionReadMixin):
    """GET: submissions to the assignment (a student: their own; teaching staff: everyone's),
    with their scores and per-cell results once visible. POST (students), multipart `files`: the
    assignment's notebooks, by name. Each submission is immutable, is timed by the server, and is
    queued for grading at once."""

    queryset = Submission.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = SubmissionSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Submission]:
        course, assignment = _assignment(self.request, self.kwargs["slug"], self.kwargs["name"])
        return _submissions(self.request, course, assignment)

    @extend_schema(responses={200: SubmissionSerializer(many=True)})
    def get(self, request: Request, slug: str, name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.serialize(page, many=True))

    @extend_schema(request={"multipart/form-data": SubmissionUploadSerializer}, responses={201: SubmissionSerializer})
    def post(self, request: Request, slug: str, name: str) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, (CourseRole.STUDENT,), "submit to this assignment")
        if not assignment.is_released:
            raise Http404("No such assignment.")
        reject_oversized_body(request, MAX_ASSIGNMENT_BYTES)
        uploads = validated(SubmissionUploadSerializer, {"files": _files(request)})["files"]
        for upload in uploads:
            reject_oversized_file(upload.name, upload.size, settings.REPROLAB_NOTEBOOK_MAX_BYTES)
        made = submissions.submit(
            assignment=assignment,
            student=authenticated_user(request),
            files=[assignments.Incoming(path=u.name, content=u) for u in uploads],
        )
        return Response(self.serialize(self.get_queryset().get(pk=made.pk)), status=status.HTTP_201_CREATED)


class SubmissionDetailView(SubmissionReadMixin):
    """A submission: state, score, late penalty, per-cell results its reader may see, feedback links."""

    serializer_class = SubmissionSerializer
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, slug: str, name: str, submission_id: int) -> Response:
        course, assignment = _assignment(request, slug, name)
        submission = get_object_or_404(_submissions(request, course, assignment), pk=submission_id)
        return Response(self.serialize(submission))


class SubmissionRegradeView(SubmissionReadMixin):
    """POST (teaching staff): grade the submission again on new runs (after a lost run or a fixed
    test). Autograded results are replaced; manual points stay."""

    serializer_class = SubmissionSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={202: SubmissionSerializer, **errors(403, 404)})
    def post(self, request: Request, slug: str, name: str, submission_id: int) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, STAFF_ROLES, "regrade submissions")
        submission = get_object_or_404(assignment.submissions.all(), pk=submission_id)
        grading.regrade(submission)
        return Response(
            self.serialize(_submissions(request, course, assignment).get(pk=submission.pk)),
            status=status.HTTP_202_ACCEPTED,
        )


class GradesReleaseView(GenericAPIView):
    """POST (instructors): release the assignment's results to its students (for
    results_visibility `on_release`); DELETE withdraws them."""

    serializer_class = AssignmentSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: AssignmentSerializer, **errors(403, 404)})
    def post(self, request: Request, slug: str, name: str) -> Response:
        return self._set(request, slug, name, released=True)

    @extend_schema(request=None, responses={200: AssignmentSerializer, **errors(403, 404)})
    def delete(self, request: Request, slug: str, name: str) -> Response:
        return self._set(request, slug, name, released=False)

    def _set(self, request: Request, slug: str, name: str, *, released: bool) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, CAN_MANAGE, "release grades")
        assignment.grades_released_at = timezone.now() if released else None
        assignment.save(update_fields=["grades_released_at"])
        return Response(self.get_serializer(assignment).data)


class SubmissionFeedbackView(GenericAPIView):
    """The feedback notebook of one submitted notebook (`?notebook=PATH`): the student's answers
    executed with the tests they were given, never the hidden ones. 404 until it is graded and
    its results are visible to the requester."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("notebook", str, required=True)],
        responses={(200, "application/x-ipynb+json"): OpenApiTypes.OBJECT, **errors(404)},
    )
    def get(self, request: Request, slug: str, name: str, submission_id: int) -> HttpResponseBase:
        course, assignment = _assignment(request, slug, name)
        submission = get_object_or_404(_submissions(request, course, assignment), pk=submission_id)
        if not submissions.results_visible(submission, staff=role_in(course) in STAFF_ROLES):
            raise Http404("No feedback yet.")
        path = str(request.query_params.get("notebook", "")).replace("\x00", "")
        file = submission.files.filter(path=path, grading_state=FileGradingState.GRADED).first()
        artifact = submissions.feedback_artifact(file) if file is not None else None
        if file is None or artifact is None:
            raise Http404("No feedback for that notebook.")
        return blob_response(
            storage_name=artifact.storage_name,
            filename=f"feedback-{file.path.rsplit('/', 1)[-1]}",
            sha256=artifact.sha256,
            content_type="application/x-ipynb+json",
        )


class ExtensionsView(GenericAPIView):
    """POST (instructors) `username`, `due_at`: that student's own due date for the assignment."""

    serializer_class = ExtensionSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=ExtensionSerializer, responses={200: ExtensionSerializer})
    def post(self, request: Request, slug: str, name: str) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, CAN_MANAGE, "grant extensions")
        data = validated(ExtensionSerializer, request.data)
        student = course.memberships.filter(user__username=data["username"], role=CourseRole.STUDENT).first()
        if student is None:
            raise ValidationError({"username": f"{data['username'][:150]!r} is not a student of this course."})
        Extension.objects.update_or_create(
            assignment=assignment, student_id=student.user_id, defaults={"due_at": data["due_at"]}
        )
        return Response({"username": data["username"], "due_at": data["due_at"]})


class CsvRenderer(BaseRenderer):
    """Text a view made as CSV already (the gradebook's export), chosen by `?format=csv`."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, str):
            return data.encode()
        return "".join(f"{key},{value}\n" for key, value in dict(data or {}).items()).encode()  # an error's detail


class GradebookView(GenericAPIView):
    """Teaching staff: students by assignments (each student's latest submission: score, late
    penalty, state, per-cell points). `?format=csv`: one row per student and assignment with the
    columns of `nbgrader export`."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "csv"], required=False)],
        responses={
            200: OpenApiTypes.OBJECT,
            (200, "text/csv"): OpenApiTypes.STR,
            **errors(403, 404),
        },
    )
    def get(self, request: Request, slug: str) -> HttpResponseBase:
        course = course_for(request.user, slug)
        require_course_role(course, STAFF_ROLES, "see the gradebook")
        book = gradebook.gradebook(course)
        if request.accepted_renderer.format == CsvRenderer.format:
            disposition = f'attachment; filename="{course.slug}-grades.csv"'
            return Response(book.csv(), headers={"Content-Disposition": disposition})
        return Response(book.as_json())


# --- grading by hand ---------------------------------------------------------------------------------
def _own_submission(request: Request, slug: str, name: str, submission_id: int) -> tuple[Course, Submission]:
    course, assignment = _assignment(request, slug, name)
    return course, get_object_or_404(_submissions(request, course, assignment), pk=submission_id)


class CellGradeView(SubmissionReadMixin):
    """PATCH (teaching staff): `points` and/or `comment` for one graded cell of the submission
    (`notebook` when two of its notebooks have that cell). Overriding an autograded test is an
    instructor's, with a `reason`; every change of points is logged. Answers with the submission."""

    serializer_class = SubmissionSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=CellGradeWriteSerializer, responses={200: SubmissionSerializer, **errors(400, 403, 404)})
    def patch(self, request: Request, slug: str, name: str, submission_id: int, grade_id: str) -> Response:
        course, submission = _own_submission(request, slug, name, submission_id)
        require_course_role(course, STAFF_ROLES, "grade submissions")
        data = validated(CellGradeWriteSerializer, request.data)
        cell = manual.cell_of(submission, grade_id, data["notebook"])
        if cell.kind == "test" and data["points"] is not None:
            require_course_role(course, CAN_MANAGE, "override an autograded test")
        manual.grade_cell(
            cell=cell,
            grader=authenticated_user(request),
            points=data["points"],
            comment=data["comment"],
            reason=data["reason"],
        )
        return Response(self.serialize(_submissions(request, course, submission.assignment).get(pk=submission.pk)))


class RegradeAskView(GenericAPIView):
    """POST (the submission's student, once its results are visible): ask for one cell to be
    graded again, with a `message`."""

    serializer_class = RegradeRequestSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=RegradeAskSerializer, responses={201: RegradeRequestSerializer, **errors(400, 403, 404)})
    def post(self, request: Request, slug: str, name: str, submission_id: int, grade_id: str) -> Response:
        course, submission = _own_submission(request, slug, name, submission_id)
        require_course_role(course, (CourseRole.STUDENT,), "ask for a regrade")
        if not submissions.results_visible(submission, staff=False):
            raise Http404("No results yet.")
        data = validated(RegradeAskSerializer, request.data)
        cell = manual.cell_of(submission, grade_id, data["notebook"])
        made = manual.request_regrade(cell=cell, student=authenticated_user(request), message=data["message"])
        return Response(self.get_serializer(made).data, status=status.HTTP_201_CREATED)


class RegradeRequestsView(mixins.ListModelMixin, GenericAPIView):
    """GET: the assignment's regrade requests (a student: their own; teaching staff: all)."""

    queryset = RegradeRequest.objects.none()  # the model, for the schema
    serializer_class = RegradeRequestSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet[RegradeRequest]:
        course, assignment = _assignment(self.request, self.kwargs["slug"], self.kwargs["name"])
        found = RegradeRequest.objects.filter(cell__file__submission__assignment=assignment).select_related(
            "cell__file", "student"
        )
        return found if role_in(course) in STAFF_ROLES else found.filter(student=authenticated_user(self.request))

    def get(self, request: Request, slug: str, name: str) -> Response:
        return self.list(request)


class RegradeAnswerView(GenericAPIView):
    """POST (teaching staff): `answer` a regrade request, with new `points` or not."""

    serializer_class = RegradeRequestSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=RegradeAnswerSerializer, responses={200: RegradeRequestSerializer, **errors(400, 403, 404)})
    def post(self, request: Request, slug: str, name: str, request_id: int) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, STAFF_ROLES, "answer regrade requests")
        found = get_object_or_404(
            RegradeRequest.objects.filter(cell__file__submission__assignment=assignment), pk=request_id
        )
        data = validated(RegradeAnswerSerializer, request.data)
        if data["points"] is not None and found.cell.kind == "test":
            require_course_role(course, CAN_MANAGE, "override an autograded test")
        answered = manual.answer_regrade(
            request=found, grader=authenticated_user(request), answer=data["answer"], points=data["points"]
        )
        return Response(self.get_serializer(answered).data)


class GradingQueueView(GenericAPIView):
    """GET (teaching staff): the cells waiting for a grader in each student's latest submission,
    one question at a time; students anonymous unless `?names=1`."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("names", bool, required=False)],
        responses={200: OpenApiTypes.OBJECT, **errors(403, 404)},
    )
    def get(self, request: Request, slug: str, name: str) -> Response:
        course, assignment = _assignment(request, slug, name)
        require_course_role(course, STAFF_ROLES, "see the grading queue")
        names = request.query_params.get("names") in ("1", "true")
        items = manual.grading_queue(gradebook.latest_submissions(assignment.submissions.all()))
        return Response({"count": len(items), "results": [item.as_json(names=names) for item in items]})
