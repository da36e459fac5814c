from django.urls import path

from . import api

P = "publications/<id:publication_id>"
R = "reviews/<id:review_id>"

urlpatterns = [
    path("publications/", api.PublicationListApi.as_view(), name="api-publications"),
    path(f"{P}/", api.PublicationApi.as_view(), name="api-publication"),
    path(f"{P}/versions/", api.PublicationVersionsApi.as_view(), name="api-publication-versions"),
    path(f"{P}/versions/<id:number>/decision/", api.DecisionApi.as_view(), name="api-publication-decision"),
    path(f"{P}/reviewers/", api.InviteApi.as_view(), name="api-publication-invite"),
    path("reviews/", api.ReviewListApi.as_view(), name="api-reviews"),
    path(f"{R}/", api.ReviewApi.as_view(), name="api-review"),
    path(f"{R}/comments/", api.CommentsApi.as_view(), name="api-review-comments"),
    path(
        f"{R}/comments/<id:comment_id>/<str:action>/",
        api.CommentResolveApi.as_view(),
        name="api-review-comment-action",
    ),
    path(f"{R}/<str:action>/", api.ReviewActionApi.as_view(), name="api-review-action"),
    path("notifications/", api.NotificationsApi.as_view(), name="api-notifications"),
]
